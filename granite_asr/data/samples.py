"""Pick the bundled demo samples: one utterance per language from the corpus's `val-unseen-both` split
(a voice AND a sentence never used in training), from licence-ok voices only (never mbrola or pico,
whose terms forbid redistribution in a product; DATA.md licences).

    python -m granite_asr.data.samples --corpus data/corpus --out granite_asr/assets/samples

Writes `<out>/<lang>.flac` and `<out>/samples.json` ([{file, language, text, voice, translate_to,
translation}]); the demo and the slow end-to-end tests read that index.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

LANGS = ("en", "fr", "de", "es", "pt", "ja")
NOT_REDISTRIBUTABLE = ("mbrola", "pico")


def pick(corpus: Path, langs=LANGS, max_seconds: float = 7.0) -> list[dict]:
    rows = [json.loads(x) for x in (corpus / "val-unseen-both.jsonl").read_text("utf-8").splitlines() if x]
    out = []
    for lang in langs:
        ok = [
            r
            for r in rows
            if r["lang"] == lang and r["engine"] not in NOT_REDISTRIBUTABLE and r["duration"] <= max_seconds
        ]
        if not ok:
            continue
        # the longest within the limit: more words, a better demo
        r = max(ok, key=lambda r: (r["duration"], r["id"]))
        target = "fr" if lang == "en" else "en"
        out.append(
            {
                "file": f"{lang}.flac",
                "language": lang,
                "text": r["text"],
                "voice": r["voice"],
                "source_id": r["id"],
                "audio": r["audio"],
                "translate_to": target,
                "translation": (r.get("translation") or {}).get(target),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m granite_asr.data.samples")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    items = pick(a.corpus)
    for it in items:
        shutil.copy(a.corpus / it.pop("audio"), a.out / it["file"])
    (a.out / "samples.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(json.dumps([(i["file"], i["voice"], i["text"]) for i in items], ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
