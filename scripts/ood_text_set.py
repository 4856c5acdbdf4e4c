"""Out-of-domain dev set for the word-LM search: everyday dialogue lines (chatterbot-corpus, BSD-3)
spoken by the corpus builder's held-out voices. The bundled word LMs are counted from software messages,
fortunes and a handbook, and the validation splits hold out sentences of those same sources; this set
measures the search on sentences of another kind (recipes/RESULTS.md, session 8).

    pip download chatterbot-corpus==1.3.3 --no-deps -d /tmp/cc && unzip -q /tmp/cc/*.whl -d /tmp/cc/x
    python scripts/ood_text_set.py --corpus /tmp/cc/x/chatterbot_corpus/data --out data/ood
    granite-asr eval data/ood/val-ood-text.jsonl --mode ctc --no-translate
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from granite_asr.data import corpus, tts
from granite_asr.data import text as textmod

FOLDERS = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "pt": "portuguese",
    "ja": "japanese",
}
MARKUP = re.compile(r"[<>{}\[\]_*#@/\\|=]")
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def sentences(folder: Path, lang: str) -> list[str]:
    """Unique dialogue sentences of one language: 4-20 words (Japanese: 8-60 characters), no markup."""
    found: set[str] = set()
    for path in sorted(folder.glob("*.yml")):
        try:
            data = yaml.safe_load(path.read_text("utf-8")) or {}
        except yaml.YAMLError:
            continue  # a few files of the package do not parse; they are skipped, not fixed
        for conversation in data.get("conversations") or []:
            for line in (x for x in conversation if isinstance(x, str)):
                for s in SENTENCE_END.split(line.strip()):
                    size_ok = 8 <= len(s) <= 60 if lang == "ja" else 4 <= len(s.split()) <= 20
                    if size_ok and not MARKUP.search(s):
                        found.add(s)
    return sorted(found)


def build(root: Path, out: Path, langs: list[str], per_lang: int, seed: int) -> list[dict]:
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for lang in langs:
        pool = sentences(root / FOLDERS[lang], lang)
        rng = np.random.default_rng(corpus.item_seed(seed, "ood", lang))
        _, held = corpus.split_voices(corpus.BuildConfig(out=out), lang)
        for i, k in enumerate(rng.permutation(len(pool))[:per_lang]):
            voice = held[int(rng.integers(len(held)))]
            rate = float(rng.uniform(0.9, 1.1))
            try:
                x, sr = tts.synthesize(
                    voice, textmod.tts_text(pool[k], lang, voice.engine), rate=rate, seed=i
                )
            except tts.SynthesisError as e:
                print(f"[ood] {lang} {i}: {e}")
                continue
            audio = f"audio/{lang}-{i:03d}.flac"
            sf.write(out / audio, x, sr)
            row = {"id": f"{lang}-ood-{i:03d}", "audio": audio, "text": pool[k], "lang": lang}
            rows.append({**row, "voice": voice.name, "duration": round(len(x) / sr, 3)})
        print(f"[ood] {lang}: {len(pool)} sentences, {sum(r['lang'] == lang for r in rows)} rendered")
    with open(out / "val-ood-text.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="chatterbot_corpus/data")
    ap.add_argument("--out", type=Path, default=Path("data/ood"))
    ap.add_argument("--langs", default="en,fr,de,es,pt,ja")
    ap.add_argument("--per-lang", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    build(args.corpus, args.out, args.langs.split(","), args.per_lang, args.seed)


if __name__ == "__main__":
    main()
