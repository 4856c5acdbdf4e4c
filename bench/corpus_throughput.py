"""Corpus-job throughput (issue 7 "Done when"; a benchmark, not a test): audio hours per wall hour of
`transcribe_corpus` in local mode vs on a local Ray instance with 2 model actors, in one run.

    python -m bench.corpus_throughput [--model CKPT] [--files 48] [--seconds 2:8] [--actors 2]

Without `--model` a random model of `--preset` (default "tiny") is made with the recipes' own commands
(a BPE tokenizer on a few sentences, one lm step), so the bench runs anywhere; its decoding is capped by
`--max-new-tokens`. Inputs are generated tone bursts over faint noise, decoded with `--no-vad` semantics.
Wall time includes model loading (and, for Ray, starting the instance and the actors): what a user waits.
Both runs must produce identical outputs (checked). Results: `bench/results/corpus_<UTC time>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

from granite_asr.train import recipe
from granite_asr.transcribe.corpus import CorpusOptions, transcribe_corpus
from granite_asr.transcribe.pipeline import make_options

SR = 16000
RESULTS = Path(__file__).parent / "results"
SENTENCES = [
    "transcribe the speech with proper punctuation.",
    "hello world, this is a test of the corpus job.",
]


def make_inputs(root: Path, files: int, low: float, high: float) -> float:
    """`files` tone-burst clips of low–high seconds under root/ → total seconds."""
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(files):
        seconds = low + (high - low) * rng.random()
        t = np.arange(int(seconds * SR)) / SR
        gate = (t % 0.5) < 0.3
        x = 0.25 * np.sin(2 * np.pi * (200 + 40 * (i % 7)) * t) * gate + 1e-3 * rng.standard_normal(t.size)
        sf.write(root / f"clip{i:03d}.wav", x.astype(np.float32), SR)
        total += seconds
    return total


def random_checkpoint(work: Path, preset: str) -> Path:
    (work / "text.txt").write_text("\n".join(SENTENCES * 20) + "\n")
    recipe.main(["tokenizer", "--out", str(work / "tok"), "--text", str(work / "text.txt"), "--vocab", "300"])
    recipe.main(["lm", "--tokenizer", str(work / "tok"), "--preset", preset, "--text", str(work / "text.txt"),
                 "--out", str(work / "lm"), "--steps", "1", "--warmup", "1", "--fp32"])  # fmt: skip
    return work / "lm" / "latest"


def timed_run(inputs: Path, out: Path, model: Path, args, **corpus) -> dict:
    options = CorpusOptions(group_seconds=args.group_seconds, progress=False, device="cpu", **corpus)
    decode = make_options(vad=False, max_new_tokens=args.max_new_tokens, progress=False)
    start = time.perf_counter()
    report = transcribe_corpus(inputs, out, model=str(model), options=options, transcribe_options=decode)
    wall = time.perf_counter() - start
    return {**report.to_dict(), "wall_seconds": round(wall, 3),
            "audio_hours_per_wall_hour": round(report.audio_seconds / wall, 2)}  # fmt: skip


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a random --preset model)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--seconds", default="2:8", help="clip length range LOW:HIGH")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--group-seconds", type=float, default=30.0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    low, high = map(float, args.seconds.split(":"))
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        audio = make_inputs(work / "in", args.files, low, high)
        model = Path(args.model) if args.model else random_checkpoint(work, args.preset)
        local = timed_run(work / "in", work / "local", model, args)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            on_ray = timed_run(
                work / "in", work / "ray", model, args, ray_address="local", actors=args.actors
            )
        finally:
            ray.shutdown()
        identical = tree(work / "local") == tree(work / "ray")
    result = {
        "bench": "corpus_throughput", "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": args.model or f"random {args.preset}", "files": args.files, "audio_seconds": round(audio, 1),
        "max_new_tokens": args.max_new_tokens, "local": local, "ray": {**on_ray, "actors": args.actors},
        "identical_outputs": identical,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"corpus_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
