"""Audio loading: any file, bytes or sample array → float32 mono at 16 kHz (SPEC §2.1 input contract).

Decoders: soundfile (libsndfile) for WAV/FLAC/OGG/AIFF and friends, where it is exact and fast; PyAV
(FFmpeg) for everything else (mp3, m4a/aac, opus, webm, video containers) and as the fallback whenever
soundfile fails. The file's magic bytes pick the decoder, then its extension (`_soundfile_first`). Channels are averaged to mono, integer PCM is scaled to [-1, 1], and the result is
resampled with soxr.

Non-finite samples (NaN/±Inf, e.g. from a broken float WAV) are replaced with 0 and reported with a
`NonFiniteAudioWarning` (a `UserWarning`, so `warnings.filterwarnings` / `pytest.warns` work). A file
whose FFmpeg decode fails part-way keeps the part decoded so far and gets a `TruncatedAudioWarning`.
Every failure to produce audio raises `AudioError`, whose message starts with the file name.

Shapes: L samples, C channels. Arrays are returned as (L,) float32.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | np.ndarray | torch.Tensor

# Extensions libsndfile decodes natively (consulted when the magic bytes are not recognised).
_SOUNDFILE_EXTS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf"}
_SOUNDFILE_EXTS |= {".w64", ".rf64", ".voc", ".sf", ".htk", ".nist", ".sph"}

# Integer PCM → float: divide by the magnitude of the most negative value (the soundfile/FFmpeg rule).
_PCM_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


class AudioError(ValueError):
    """Audio that cannot be turned into samples. `str(err)` is "<source>: <problem>"."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class NonFiniteAudioWarning(UserWarning):
    """NaN or Inf samples were replaced with 0."""


class TruncatedAudioWarning(UserWarning):
    """Decoding stopped early on corrupt or missing data; the decoded part was kept."""


# ---------------------------------------------------------------------------------------- public


def load_audio(
    source: AudioSource, sample_rate: int = 16000, *, source_rate: int | None = None
) -> np.ndarray:
    """Decode / convert `source` to a (L,) float32 mono waveform at `sample_rate`.

    source: a path (str / Path), encoded bytes, a binary file object (read to the end), or samples as a
        numpy array / torch tensor. Sample arrays are taken to be at `source_rate` (default: already at
        `sample_rate`); a 2-D array is (C, L) or (L, C), whichever axis is shorter being the channels.
        Integer arrays (int8/16/32, uint8) are scaled as PCM.
    Raises AudioError (a ValueError) naming the source and the problem.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        name = "<array>"
        samples, rate = _array_to_mono(source, name), source_rate or sample_rate
    else:
        if source_rate is not None:
            raise TypeError("source_rate is only for sample arrays; encoded audio carries its own rate")
        name, data = _open(source)
        samples, rate = _decode(data, name)
    samples = _replace_non_finite(samples, name)
    if samples.size == 0:
        raise AudioError(name, "contains no audio samples")
    return resample(samples, rate, sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(L,) float32 → (≈ L · to_rate / from_rate,) float32.

    soxr at 'VHQ': a true band-limited (windowed-sinc class) resampler, so the 8 kHz band kept at 16 kHz has
    no aliasing and a flat passband; it is also fast (C, SIMD) and well maintained, unlike hand-rolled
    polyphase or linear interpolation, which alias and colour the spectrum the model sees.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} → {to_rate}")
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="VHQ").astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- sources


def _open(source) -> tuple[str, str | bytes]:
    """→ (display name, path or bytes). Checks what can be checked before decoding."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise AudioError(name, "no such file")
        if path.is_dir():
            raise AudioError(name, "is a directory, not an audio file")
        if not os.access(path, os.R_OK):
            raise AudioError(name, "permission denied")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise AudioError(name, f"cannot read: {e.strerror or e}") from e
        if size == 0:
            raise AudioError(name, "empty file (0 bytes)")
        return name, name
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
    elif hasattr(source, "read"):
        raw_name = getattr(source, "name", None)
        name = raw_name if isinstance(raw_name, str) else "<stream>"
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{name}: file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise TypeError(f"cannot load audio from {type(source).__name__}")
    if not data:
        raise AudioError(name, "empty file (0 bytes)")
    return name, data


def _array_to_mono(array, name: str) -> np.ndarray:
    """Sample array (L,), (C, L) or (L, C), float or integer PCM → (L,) float32 (a copy)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()
    array = np.asarray(array)
    if array.ndim == 2:
        array = array.T if array.shape[0] > array.shape[1] else array  # (C, L)
    elif array.ndim != 1:
        raise AudioError(name, f"expected samples of shape (L,) or 2-D with channels, got {array.shape}")
    return _downmix(_to_float(np.atleast_2d(array), name))


def _to_float(array: np.ndarray, name: str) -> np.ndarray:
    """(C, L) any supported dtype → (C, L) float32 in [-1, 1] for PCM."""
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype == np.uint8:  # unsigned 8-bit PCM is centred on 128 (WAV convention)
        return (array.astype(np.float32) - 128.0) / 128.0
    scale = _PCM_SCALE.get(array.dtype)
    if scale is None:
        raise AudioError(
            name, f"unsupported sample type {array.dtype}; use float, int8/16/32 or uint8 PCM samples"
        )
    return (array.astype(np.float64) / scale).astype(np.float32)


def _downmix(channels: np.ndarray) -> np.ndarray:
    """(C, L) → (L,) by averaging, for any C and any layout (as librosa.to_mono does); no gain rules."""
    return channels.mean(axis=0, dtype=np.float64).astype(np.float32) if len(channels) > 1 else channels[0]


def _replace_non_finite(samples: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(samples)
    count = int(bad.sum())
    if count:
        samples = np.where(bad, np.float32(0.0), samples)
        warnings.warn(
            f"{name}: {count} NaN/Inf sample(s) replaced with 0", NonFiniteAudioWarning, stacklevel=3
        )
    return samples


# ---------------------------------------------------------------------------------------- decoding


def _decode(data: str | bytes, name: str) -> tuple[np.ndarray, int]:
    """Path or encoded bytes → ((L,) float32 mono, sample rate). soundfile first where it applies."""
    kind = _sniff(_head(data))
    errors = []
    if _soundfile_first(kind, data, name):
        try:
            return _decode_soundfile(data)
        except Exception as e:  # libsndfile reports malformed input as several exception types
            errors.append(f"soundfile: {_reason(e)}")
    try:
        return _decode_pyav(data, name)
    except AudioError:
        raise
    except Exception as e:  # FFmpeg errors come as a family of OSError/ValueError/EOFError subclasses
        errors.append(f"FFmpeg: {_reason(e)}")
    what = f"looks like {kind} but is truncated or corrupt" if kind else _NOT_AUDIO
    raise AudioError(name, f"cannot decode: {what} ({'; '.join(errors)})")


def _soundfile_first(kind: str | None, data: str | bytes, name: str) -> bool:
    """The file's magic bytes decide, then its extension. Bytes of an unknown kind try soundfile too.

    Routing MP3/MP4/WebM straight to FFmpeg keeps one decoder per format whether a file comes as a path
    or as bytes (libsndfile ≥ 1.1 also reads MP3, with a different decoder and stderr chatter).
    """
    if kind is not None:
        return kind in _SOUNDFILE_KINDS
    ext = Path(name).suffix.lower() if isinstance(data, str) else ""
    return not ext or ext in _SOUNDFILE_EXTS


def _decode_soundfile(data: str | bytes) -> tuple[np.ndarray, int]:
    # dtype=float32: libsndfile scales integer PCM to [-1, 1) itself (divides by 2^(bits-1)).
    file = data if isinstance(data, str) else io.BytesIO(data)
    samples, rate = sf.read(file, dtype="float32", always_2d=True)  # (L, C)
    return _downmix(samples.T), int(rate)  # (C, L) → (L,)


def _decode_pyav(data: str | bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg. Sample-rate changes mid-stream are resampled per run."""
    import av  # imported lazily: FFmpeg's libraries are large and WAV/FLAC users never need them

    runs: list[tuple[int, list[np.ndarray]]] = []  # consecutive chunks at one rate
    with av.open(data if isinstance(data, str) else io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioError(name, "no audio stream (a video or data file without sound?)")
        stream = container.streams.audio[0]
        try:
            for frame in container.decode(stream):
                chunk = _frame_to_mono(frame)
                if not runs or runs[-1][0] != frame.sample_rate:
                    runs.append((frame.sample_rate, []))
                runs[-1][1].append(chunk)
        except (av.error.FFmpegError, EOFError) as e:
            if not runs:
                raise
            seconds = sum(sum(len(c) for c in chunks) / rate for rate, chunks in runs)
            warnings.warn(
                f"{name}: truncated or corrupt audio after {seconds:.2f} s ({_reason(e)}); "
                "keeping the decoded part",
                TruncatedAudioWarning,
                stacklevel=4,
            )
    if not runs:
        return np.zeros(0, dtype=np.float32), 1  # load_audio turns this into "contains no audio samples"
    target = runs[0][0]
    parts = [resample(np.concatenate(chunks), rate, target) for rate, chunks in runs]
    return np.concatenate(parts), target


def _frame_to_mono(frame) -> np.ndarray:
    """One av.AudioFrame → (n,) float32. Planar formats give (C, n); packed ones (1, n·C) interleaved."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T  # (C, n)
    return _downmix(_to_float(array, "<frame>"))


# ---------------------------------------------------------------------------------------- messages


_MAGIC = (
    (b"RIFF", "WAV"),
    (b"RF64", "WAV"),
    (b"fLaC", "FLAC"),
    (b"OggS", "Ogg"),
    (b"FORM", "AIFF"),
    (b"ID3", "MP3"),
    (b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
)
_SOUNDFILE_KINDS = {"WAV", "FLAC", "Ogg", "AIFF"}
_NOT_AUDIO = "not an audio file, or an unsupported or corrupt format"


def _head(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data[:16]
    try:
        with open(data, "rb") as f:
            return f.read(16)
    except OSError:
        return b""


def _sniff(head: bytes) -> str | None:
    """Container kind from the first bytes, or None. Used for routing and for error messages."""
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "MP4/M4A"
    if kind is None and len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        kind = "MPEG audio"  # an MP3 / ADTS-AAC frame sync word without an ID3 tag
    return kind


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
