"""The README's main job: transcribe and translate the bundled samples with the embedded model.

    python -m granite_asr.demo [--model DIR_OR_HUB_ID]

Samples live in `granite_asr/assets/samples/` with a `samples.json` listing file, language and an
optional translation target.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .api import load_model
from .audio.io import load_audio
from .decoding.simple import greedy_transcribe

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
    model = load_model(args.model)
    print(f"model: {args.model or 'embedded default'} ({model.variant})")
    for item in json.loads(index.read_text()):
        audio = load_audio(args.samples / item["file"])
        lang = item.get("language")
        text = greedy_transcribe(model, [audio], language=lang)[0]
        print(f"[{item['file']}] ({lang}) {text}")
        target = item.get("translate_to")
        if target and model.variant == "ar":
            tr = greedy_transcribe(model, [audio], task="translate", language=lang, target_language=target)[0]
            print(f"[{item['file']}] ({lang} → {target}) {tr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
