"""Audio files for tests, written with the libraries users' files come from (PyAV for compressed codecs)."""

from __future__ import annotations

import av
import numpy as np


def encode_mp3(path, samples: np.ndarray, rate: int) -> None:
    """Write planar float samples (channels, n) as an mp3 with PyAV (libmp3lame), 1152-sample frames."""
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=rate, layout=layout)
        for i in range(0, samples.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + 1152].copy(), format="fltp", layout=layout)
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
