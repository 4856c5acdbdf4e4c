"""Long-form benchmark (issue 3 "Done when": the 1-hour run's wall time, RTFx and peak RSS).

Builds one long recording from the bundled samples of a language (in a seeded random order, with pauses of
0.3–2.5 s and faint noise between them, so the VAD has real cut points), writes it as FLAC, and runs
`model.transcribe` on the file exactly as a user would. Reports wall time, RTFx (audio / wall, loading
excluded), the process's peak RSS, and the WER of the whole transcript against the concatenated
references, which is what exposes words lost or repeated across windows.

    python -m bench.long_form [--model CKPT] [--minutes 60] [--lang en] [--mode auto] [--word-timestamps]

Results go to `bench/results/long_form_<UTC time>.json`. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

import granite_asr
from granite_asr.demo import SAMPLES
from granite_asr.evaluate import error_rate

RESULTS = Path(__file__).parent / "results"
SR = 16000


def long_recording(lang: str, minutes: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """(samples, references in order): bundled clips of `lang` with seeded pauses until `minutes`."""
    items = [it for it in json.loads((SAMPLES / "samples.json").read_text("utf-8")) if it["language"] == lang]
    if not items:
        raise SystemExit(f"no bundled sample in language {lang!r}")
    clips = [(sf.read(SAMPLES / it["file"], dtype="float32")[0], it["text"]) for it in items]
    rng = np.random.default_rng(seed)
    parts, refs, total = [], [], 0
    while total < minutes * 60 * SR:
        audio, text = clips[int(rng.integers(len(clips)))]
        pause = 0.003 * rng.standard_normal(int(SR * rng.uniform(0.3, 2.5))).astype(np.float32)
        parts += [pause, audio * np.float32(rng.uniform(0.5, 1.0))]
        refs.append(text)
        total += pause.size + audio.size
    return np.concatenate(parts), refs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(args: argparse.Namespace) -> dict:
    audio, refs = long_recording(args.lang, args.minutes, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"long_{args.lang}.flac"
        sf.write(path, audio, SR)
        del audio
        rss_before_model = peak_rss_mib()
        model = granite_asr.load_model(args.model)
        t0 = time.perf_counter()
        res = model.transcribe(
            str(path), language=args.lang, mode=args.mode, word_timestamps=args.word_timestamps, progress=True
        )
        wall = time.perf_counter() - t0
    if not res.ok:
        raise SystemExit(f"transcription failed: {res.error}")
    seconds = res.duration
    return {
        "bench": "long_form",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model or "embedded default",
        "variant": model.variant,
        "lang": args.lang,
        "mode": args.mode,
        "word_timestamps": args.word_timestamps,
        "audio_seconds": round(seconds, 1),
        "wall_seconds": round(wall, 1),
        "rtfx": round(seconds / wall, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_before_model_mib": round(rss_before_model, 1),
        "segments": len(res.segments),
        "words": len(res.words),
        "wer_percent": round(error_rate([" ".join(refs)], [res.text], args.lang), 2),
        "reference_words": sum(len(r.split()) for r in refs),
        "hypothesis_words": len(res.text.split()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory or hub id (default: embedded)")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--lang", default="en")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--word-timestamps", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = run(args)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"long_form_{stamp}.json"
    path.write_text(json.dumps(out, indent=1) + "\n", "utf-8")
    print(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
