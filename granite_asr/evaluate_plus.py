"""Speaker and timestamp error of the Plus path on conversation manifests (issue 4: "timestamp error and
speaker error of the Plus-style path").

A conversation row (`data.corpus build --conversations`) carries its turns and every word's start/end, known
exactly from synthesis. Each row is transcribed three ways through the public pipeline:

- `speakers=True`: the `[Speaker N]:` prompt. **WDER** (word diarization error rate, Shafey et al. 2019):
  over the reference words aligned to a hypothesis word (hits and substitutions), the share whose
  speaker differs from the reference's, after the best one-to-one mapping of hypothesis labels to
  reference speakers; also the share of rows whose number of speakers comes out right.
- `word_timestamps=True`: words timed by char-CTC alignment (what every variant returns by default).
- `model_timestamps=True`: words timed by the model's own `[T:cs]` tags (SPEC §7.3).

For both timestamp paths: the mean and median absolute error of word end and start times over the words
that match the reference exactly (after lower-casing and stripping punctuation), and the share of ends
within 200 ms. When the transcript is poor, an exact match can pair a word with the same word elsewhere
in the conversation, so the median is the robust figure; `ctc-reference` separates timing from
recognition: the reference words force-aligned on the char-CTC posteriors (the aligner's own error).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from .audio.io import load_audio
from .decoding.align import align_batch
from .evaluate import error_rate
from .options import DecodeOptions, TranscribeOptions
from .transcribe.pipeline import engine_for, transcribe

TOLERANCE_S = 0.2
_PUNCT = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _PUNCT.sub("", word.lower())


def _pairs(ref: list[str], hyp: list[str], matched_only: bool) -> list[tuple[int, int]]:
    """(reference index, hypothesis index) of aligned words: hits (and substitutions unless
    `matched_only`). Words are normalised first; empty ones (punctuation alone) are left out."""
    r_idx = [i for i, w in enumerate(ref) if _norm(w)]
    h_idx = [j for j, w in enumerate(hyp) if _norm(w)]
    if not r_idx or not h_idx:
        return []
    out = jiwer.process_words(" ".join(_norm(ref[i]) for i in r_idx), " ".join(_norm(hyp[j]) for j in h_idx))
    pairs = []
    for chunk in out.alignments[0]:
        if chunk.type == "equal" or (chunk.type == "substitute" and not matched_only):
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                pairs.append((r_idx[chunk.ref_start_idx + k], h_idx[chunk.hyp_start_idx + k]))
    return pairs


def wder(
    ref_words: list[str], ref_spk: list[int], hyp_words: list[str], hyp_spk: list[str | None]
) -> tuple[int, int]:
    """(words with the wrong speaker, aligned words) of one row; WDER = the first over the second."""
    pairs = _pairs(ref_words, hyp_words, matched_only=False)
    if not pairs:
        return 0, 0
    refs, hyps = sorted(set(ref_spk)), sorted({str(h) for h in hyp_spk})
    counts = {(r, h): 0 for r in refs for h in hyps}
    for i, j in pairs:
        counts[(ref_spk[i], str(hyp_spk[j]))] += 1
    best = 0
    for perm in itertools.permutations(hyps, min(len(hyps), len(refs))):  # ≤ 4 speakers: brute force
        for subset in itertools.combinations(refs, len(perm)):
            best = max(best, sum(counts[(r, h)] for r, h in zip(subset, perm, strict=True)))
    return len(pairs) - best, len(pairs)


def time_errors(ref: list[dict], hyp_words: list) -> list[tuple[float, float]]:
    """(|Δend|, |Δstart|) in seconds for every word that matches its reference exactly."""
    pairs = _pairs([w["word"] for w in ref], [w.word for w in hyp_words], matched_only=True)
    return [
        (abs(hyp_words[j].end - ref[i]["end"]), abs(hyp_words[j].start - ref[i]["start"])) for i, j in pairs
    ]


@dataclass
class PlusReport:
    manifest: str
    rows: int = 0
    wer: dict = field(default_factory=dict)  # % per language, of the speaker-attributed transcript
    wder: float = float("nan")  # %
    speaker_count_accuracy: float = float("nan")  # % of rows
    # {"ctc"|"model": {end_mae_s, start_mae_s, within_200ms (%), words}}
    timestamps: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def table(self) -> str:
        wer = "  ".join(f"{k} {v:.1f}" for k, v in sorted(self.wer.items()))
        lines = [
            f"rows {self.rows}  WER % {wer}  WDER {self.wder:.1f} %  "
            f"speaker count right {self.speaker_count_accuracy:.0f} %"
        ]
        for name, t in self.timestamps.items():
            lines.append(
                f"timestamps ({name}): end MAE {1000 * t['end_mae_s']:.0f} ms (median "
                f"{1000 * t['end_median_s']:.0f} ms), start MAE "
                f"{1000 * t['start_mae_s']:.0f} ms, {t['within_200ms']:.0f} % of ends within 200 ms "
                f"({t['words']} matched words)"
            )
        return "\n".join(lines)


def _summary(errors: list[tuple[float, float]]) -> dict:
    e = np.array(errors, dtype=float).reshape(-1, 2)
    if not len(e):
        nan = float("nan")
        return {"end_mae_s": nan, "end_median_s": nan, "start_mae_s": nan, "within_200ms": 0.0, "words": 0}
    return {
        "end_mae_s": float(e[:, 0].mean()),
        "end_median_s": float(np.median(e[:, 0])),
        "start_mae_s": float(e[:, 1].mean()),
        "within_200ms": float(100 * (e[:, 0] <= TOLERANCE_S).mean()),
        "words": int(len(e)),
    }


def evaluate_plus(model, manifest: str | Path, *, limit: int | None = None, batch_size: int | None = None):
    """Score a Plus model on a conversation manifest (rows with `turns` and `words`)."""
    manifest = Path(manifest)
    rows = [json.loads(x) for x in manifest.read_text("utf-8").splitlines() if x.strip()][:limit]
    rows = [r for r in rows if "words" in r and "turns" in r]
    if not rows:
        raise ValueError(f"{manifest}: no conversation rows (with 'turns' and 'words')")
    engine = engine_for(model)
    audios = [load_audio(manifest.parent / r["audio"]) for r in rows]
    common = dict(progress=False, batch_size=batch_size, vad=False, chunk_seconds=60.0)
    report = PlusReport(manifest=str(manifest), rows=len(rows))
    spk = transcribe(engine, audios, speakers=True, **common)
    for lang in sorted({r["lang"] for r in rows}):
        pick = [(r["text"], o.text) for r, o in zip(rows, spk, strict=True) if r["lang"] == lang]
        report.wer[lang] = error_rate([a for a, _ in pick], [b for _, b in pick], lang)
    scores, right = [], []
    for r, o in zip(rows, spk, strict=True):
        hyp = [(w, seg.speaker) for seg in o.segments for w in seg.text.split()]  # a turn is a segment
        ref = [w["word"] for w in r["words"]], [w["speaker"] for w in r["words"]]
        scores.append(wder(*ref, [w for w, _ in hyp], [s for _, s in hyp]))
        right.append(len({seg.speaker for seg in o.segments if seg.speaker}) == len(r["speakers"]))
    wrong, aligned = np.sum(scores, axis=0)
    report.wder = 100 * float(wrong / aligned) if aligned else float("nan")
    report.speaker_count_accuracy = 100 * float(np.mean(right))
    for name, extra in (("ctc", {"word_timestamps": True}), ("model", {"model_timestamps": True})):
        outs = transcribe(engine, audios, **extra, **common)
        errs = [e for r, o in zip(rows, outs, strict=True) for e in time_errors(r["words"], o.words)]
        report.timestamps[name] = _summary(errs)
    report.timestamps["ctc-reference"] = _summary(reference_alignment_errors(engine, rows, audios))
    return report


def reference_alignment_errors(engine, rows: list[dict], audios) -> list[tuple[float, float]]:
    """The reference words force-aligned on each row's char-CTC posteriors, against the true times."""
    results = engine.run(audios, TranscribeOptions(decode=DecodeOptions(mode="ctc"), progress=False))
    words = [[" " + w["word"] for w in r["words"]] for r in rows]
    spans = align_batch([res.char_logits for res in results], words)
    errors = []
    for r, res, sp in zip(rows, results, spans, strict=True):
        fs = float(res.frame_seconds)
        for w, s in zip(r["words"], sp, strict=True):
            errors.append((abs(s.end * fs - w["end"]), abs(s.start * fs - w["start"])))
    return errors
