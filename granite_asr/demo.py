"""The README's main job: transcribe and translate the bundled samples with the embedded model.

    python -m granite_asr.demo [--model DIR_OR_HUB_ID]

Samples live in `granite_asr/assets/samples/` with a `samples.json` listing file, language, reference
text and a translation target; they come from voices and sentences never used in training
(`python -m granite_asr.data.samples`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .api import load_model

SAMPLES = Path(__file__).parent / "assets" / "samples"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory or hub id (default: embedded)")
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    args = ap.parse_args(argv)
    index = args.samples / "samples.json"
    if not index.exists():
        print(f"no bundled samples at {index}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model)
    except FileNotFoundError as e:
        print(f"{e}\nrun `make demo MODEL=<checkpoint directory or hub id>`", file=sys.stderr)
        return 2
    items = json.loads(index.read_text("utf-8"))
    print(f"model: {args.model or 'embedded default'} ({model.variant})\n")
    supported = [it for it in items if model.variant == "ar" or it["language"] != "ja"]
    results = model.transcribe(
        [str(args.samples / it["file"]) for it in supported], progress=False, word_timestamps=True
    )
    for it, res in zip(supported, results, strict=True):
        print(f"{it['file']} [{it['language']}]")
        print(f"  reference:  {it['text']}")
        print(f"  transcript: {res.text if res.ok else 'ERROR ' + str(res.error)}")
        if res.words:
            w = res.words[0]
            print(f"  first word: {w.word.strip()!r} {w.start:.2f}–{w.end:.2f} s")
    if model.variant == "ar":
        print()
        for it in supported:
            target = it.get("translate_to")
            if not target:
                continue
            res = model.transcribe(
                str(args.samples / it["file"]),
                task="translate",
                language=it["language"],
                target_language=target,
                progress=False,
            )
            print(f"{it['file']} [{it['language']} → {target}] {res.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
