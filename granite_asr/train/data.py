"""Training data: corpus manifests → cached stacked log-mel features → length-bucketed batches.

Legend: B batch, T encoder frames (after stacking), D stacked mel width (n_mels × frames stacked).

Features are computed once per split with the same `FeatureExtractor` inference uses (so training and
inference see identical inputs) and stored as one float16 memmap plus a JSON index; a 2-core machine
then spends its time on the model, not on STFTs. SpecAugment is applied on the fly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio.features import FeatureExtractor, stretch_time
from ..config import SpeechConfig
from ..lengths import FrameGeometry


@dataclass(frozen=True)
class Utterance:
    index: int  # row in the cache
    offset: int  # first frame in the memmap
    frames: int
    text: str
    lang: str
    translation: dict  # {lang: text}
    extra: dict  # manifest fields kept as-is (words, speakers, voice, ...)


class FeatureCache:
    """One split's features: `<dir>/<split>.f16` (ΣT, D) memmap and `<split>.json` index."""

    def __init__(self, directory: Path, split: str):
        self.directory, self.split = Path(directory), split
        meta = json.loads((self.directory / f"{split}.json").read_text("utf-8"))
        self.dim = meta["dim"]
        self.items = [Utterance(**u) for u in meta["items"]]
        total = sum(u.frames for u in self.items)
        self.feats = np.memmap(self.directory / f"{split}.f16", np.float16, "r", shape=(total, self.dim))

    def __len__(self) -> int:
        return len(self.items)

    def features(self, u: Utterance) -> np.ndarray:
        return np.asarray(self.feats[u.offset : u.offset + u.frames], dtype=np.float32)

    @staticmethod
    def build(manifest: Path, directory: Path, split: str, config: SpeechConfig) -> FeatureCache:
        """Compute features for every row of a corpus manifest (skips if already built for this config)."""
        directory.mkdir(parents=True, exist_ok=True)
        index = directory / f"{split}.json"
        key = {
            "manifest": str(manifest),
            "features": config.features.__dict__,
            "dim": config.encoder.input_dim,
        }
        if index.exists() and json.loads(index.read_text("utf-8")).get("key") == key:
            return FeatureCache(directory, split)
        fx = FeatureExtractor.from_config(config)
        rows = [json.loads(line) for line in Path(manifest).read_text("utf-8").splitlines() if line.strip()]
        items, offset = [], 0
        with open(directory / f"{split}.f16", "wb") as out:
            for i, row in enumerate(rows):
                audio, sr = sf.read(Path(manifest).parent / row["audio"], dtype="float32")
                if sr != config.features.sample_rate:
                    raise ValueError(f"{row['audio']}: corpus audio must be {config.features.sample_rate} Hz")
                feats = fx.clip_features(torch.from_numpy(audio)).numpy().astype(np.float16)  # (T, D)
                out.write(feats.tobytes())
                extra = {k: v for k, v in row.items() if k not in ("audio", "text", "lang", "translation")}
                items.append(
                    dict(
                        index=i,
                        offset=offset,
                        frames=int(feats.shape[0]),
                        text=row["text"],
                        lang=row["lang"],
                        translation=row.get("translation") or {},
                        extra=extra,
                    )
                )
                offset += feats.shape[0]
        meta = {"key": key, "dim": config.encoder.input_dim, "items": items}
        index.write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
        return FeatureCache(directory, split)


@dataclass
class FeatureBatch:
    features: torch.Tensor  # (B, T, D)
    lengths: torch.Tensor  # (B,)
    items: list[Utterance]
    # An lm batch (ids (B', L), valid (B', L)) trained beside the speech rows (`recipe --text-weight`);
    # every rank computes it whole, so its gradient is the same with or without torchrun.
    text: tuple[torch.Tensor, torch.Tensor] | None = None


def bucket_batches(
    items: list[Utterance], max_frames: int, max_batch: int, rng: np.random.Generator | None
) -> list[list[Utterance]]:
    """Group similar lengths so padding is small; each batch holds ≤ max_frames padded frames."""
    order = sorted(items, key=lambda u: (u.frames, u.index))
    if rng is not None:  # shuffle within length-neighbourhoods so epochs differ
        keys = np.array([u.frames for u in order], dtype=np.float64) * rng.uniform(0.9, 1.1, len(order))
        order = [order[i] for i in np.argsort(keys, kind="stable")]
    batches, cur = [], []
    for u in order:
        width = max([u.frames] + [c.frames for c in cur])
        if cur and (width * (len(cur) + 1) > max_frames or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(u)
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def spec_augment(
    x: torch.Tensor, lengths: torch.Tensor, n_mels: int, rng: np.random.Generator
) -> torch.Tensor:
    """Two frequency masks (≤ 15 % of the mel bins, same bins in every stacked frame) and time masks
    (one per ~2 s, ≤ 5 % each). x (B, T, D) in place-safe copy."""
    x = x.clone()
    b, t, d = x.shape
    stack = d // n_mels
    view = x.view(b, t, stack, n_mels)  # (B, T, s, n_mels)
    for i in range(b):
        n = int(lengths[i])
        for _ in range(2):
            w = int(rng.integers(0, max(1, int(0.15 * n_mels))))
            f0 = int(rng.integers(0, n_mels - w + 1))
            view[i, :, :, f0 : f0 + w] = 0.0
        for _ in range(max(1, n // 50)):
            w = int(rng.integers(0, max(1, int(0.05 * n)) + 1))
            t0 = int(rng.integers(0, max(1, n - w)))
            view[i, t0 : t0 + w] = 0.0
    return x


def vtlp(x: torch.Tensor, n_mels: int, rng: np.random.Generator, max_warp: float = 0.12) -> torch.Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) on cached features: each utterance's mel
    axis is stretched by its own α ∈ [1 − w, 1 + w], as from a shorter or longer vocal tract, i.e.
    another speaker. Warping the mel-bin index approximates warping frequency. It multiplies a synthetic
    corpus's voices at no synthesis cost (NOTES: voices, not compute, limit transfer). x (B, T, D)."""
    b, t, d = x.shape
    view = x.reshape(b, t, d // n_mels, n_mels)  # (B, T, s, M)
    alpha = torch.from_numpy(rng.uniform(1 - max_warp, 1 + max_warp, b)).to(x.dtype)  # (B,)
    src = (torch.arange(n_mels, dtype=x.dtype)[None] / alpha[:, None]).clamp(0, n_mels - 1)  # (B, M)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_mels - 1)
    frac = (src - lo)[:, None, None, :]  # (B, 1, 1, M)

    def take(idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(view, 3, idx[:, None, None, :].expand_as(view))

    return (take(lo) * (1 - frac) + take(hi) * frac).reshape(b, t, d)


def random_eq(
    x: torch.Tensor, lengths: torch.Tensor, n_mels: int, rng: np.random.Generator, max_db: float = 6.0
) -> torch.Tensor:
    """Random spectral colouring: each utterance gets its own smooth gain curve over the mel axis (a tilt
    and three cosines, peak |gain| drawn up to `max_db`), as from another microphone, room or synthesizer
    timbre — the channel differences VTLP does not cover. Added in the log-mel domain of SPEC §2.1
    (log10 power / 4), on the utterance's frames only. x (B, T, D)."""
    b, t, d = x.shape
    m = torch.linspace(0, 1, n_mels, dtype=torch.float64)
    basis = torch.stack([m - 0.5, *(torch.cos(torch.pi * k * m) for k in (1, 2, 3))])  # (4, M)
    coef = torch.from_numpy(rng.uniform(-1, 1, (b, 4)) / np.array([1, 1, 2, 3]))  # smoother at higher k
    curve = coef @ basis  # (B, M)
    peak = curve.abs().amax(-1, keepdim=True).clamp(min=1e-9)
    db = curve / peak * torch.from_numpy(rng.uniform(0, max_db, (b, 1)))  # (B, M)
    gain = (db / 10.0 / 4.0).to(x.dtype)  # dB → log10 power → feature units
    valid = (torch.arange(t)[None] < lengths[:, None]).to(x.dtype)  # (B, T)
    view = x.reshape(b, t, d // n_mels, n_mels)  # (B, T, s, M)
    return (view + gain[:, None, None, :] * valid[:, :, None, None]).reshape(b, t, d)


def random_gain(
    x: torch.Tensor, lengths: torch.Tensor, rng: np.random.Generator, max_db: float, p: float = 0.5
) -> torch.Tensor:
    """Recording level: with probability `p` an utterance is made quieter by up to `max_db` dB. TTS
    renders near full scale, real recordings often 20-30 dB below it, and the log-mel of SPEC §2.1
    keeps absolute level (its floor follows each utterance's peak, so a gain moves every valid frame
    by the same dB/40 feature units: exactly a waveform gain, at no rendering cost). x (B, T, D)."""
    b, t, _ = x.shape
    db = rng.uniform(-max_db, 0.0, b) * (rng.random(b) < p)  # (B,)
    shift = torch.from_numpy(db / 10.0 / 4.0).to(x.dtype)  # dB → log10 power → feature units
    valid = (torch.arange(t)[None] < lengths[:, None]).to(x.dtype)  # (B, T)
    return x + (shift[:, None] * valid)[:, :, None]


def random_tempo(
    x: torch.Tensor,
    lengths: torch.Tensor,
    geometry: FrameGeometry,
    rng: np.random.Generator,
    max_tempo: float,
    p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tempo perturbation: with probability `p` an utterance's log-mel is stretched in time by its own
    τ ∈ [1, max_tempo] (`audio.features.stretch_time`, the resampling the engine applies when it
    re-encodes a clip whose char head ran out of frames, RESULTS session 25), then restacked. The model
    thus trains on the slowed spectra it is fed at inference, and a row too fast for its 25 Hz char
    frames (dropped by `zero_infinity`) gets the frames to be learnt from. Returns the new features
    (B, T', D), zero-padded, and lengths (B,). x (B, T, D)."""
    b, _, d = x.shape
    stack = geometry.frames_stacked
    taus = np.where(rng.random(b) < p, rng.uniform(1.0, max_tempo, b), 1.0)  # (B,)
    rows = []
    for i in range(b):
        n = int(lengths[i])
        mel = x[i, :n].reshape(1, n * stack, d // stack)  # (1, M, N)
        if taus[i] != 1.0:
            frames = geometry.stretched_encoder_frames(n, float(taus[i]))
            mel = stretch_time(mel, frames * stack)  # (1, M', N)
        rows.append(mel.reshape(-1, d))  # (T', D)
    new_lengths = torch.tensor([r.shape[0] for r in rows], dtype=lengths.dtype)
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), new_lengths  # (B, T', D)


def collate(cache: FeatureCache, batch: list[Utterance]) -> FeatureBatch:
    width = max(u.frames for u in batch)
    feats = torch.zeros(len(batch), width, cache.dim)
    for i, u in enumerate(batch):
        feats[i, : u.frames] = torch.from_numpy(cache.features(u))
    lengths = torch.tensor([u.frames for u in batch])
    return FeatureBatch(feats, lengths, batch)


def epoch_batches(cache: FeatureCache, max_seconds: float, frame_seconds: float, max_batch: int, seed: int):
    max_frames = int(math.ceil(max_seconds / frame_seconds))
    return bucket_batches(cache.items, max_frames, max_batch, np.random.default_rng(seed))
