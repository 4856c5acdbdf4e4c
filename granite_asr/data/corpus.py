"""Synthetic multilingual speech corpus: plan (deterministic from a seed), render in parallel, write manifests.

    python -m granite_asr.data.corpus build --out data/corpus --langs en,fr,de,es,pt,ja \\
        --hours-per-lang 5 --seed 0 --workers 2 [--conversations 500]

Splits (one JSONL manifest each, audio under DIR/audio/<split>/<lang>/):
  train              training voices x training sentences
  val-unseen-voice   held-out voices (all mbrola/pico + HELD_OUT_FAMILIES) x training sentences
  val-unseen-text    training voices x held-out sentences (never synthesised for train)
  val-unseen-both    held-out voices x held-out sentences
  conv-train / conv-val   multi-speaker conversations with per-word times (Plus-style training)

A sentence is held out by hashing its English pivot (the sentence itself for en, its msgid for a parallel
pair), so a held-out sentence is held out in every language and its translation never leaks into train.
Re-running the same command resumes: finished items (row in DIR/.partial/<split>.jsonl) are skipped.
`--convert-prob P` resynthesises that share of the train utterances as WORLD pseudo-speakers (new pitch,
formants and intonation range, `voice_conv.py`); everything else in the plan stays as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from . import text as textmod
from . import tts
from . import voice_conv as vc
from .manifest import merge_manifests
from .render import init_worker, render

SR = tts.SAMPLE_RATE
SPLITS = ("train", "val-unseen-voice", "val-unseen-text", "val-unseen-both", "conv-train", "conv-val")
# Licence-ok voice families kept out of training so every language has unseen *free* voices too.
HELD_OUT_FAMILIES = ("espeak+m7", "espeak+f4", "rms", "kokoro:jf_nezumi")
# Relative share of utterances per engine (within a language, among the engines that have voices).
ENGINE_WEIGHTS = {
    "espeak": 1.0,
    "flite": 0.5,
    "festival": 0.5,
    "piper": 0.5,
    "kokoro": 1.0,
    "open_jtalk": 1.0,
    "mbrola": 1.0,
    "pico": 1.0,
}
# Linear fit of duration on word count over a small mixed build (all engines, random rates): only used to
# turn --hours-per-lang into an utterance count; build.json reports the hours actually rendered.
SECONDS_PER_WORD, SECONDS_PER_UTT = 0.27, 1.0


@dataclass
class BuildConfig:
    out: Path
    langs: tuple[str, ...] = ("en",)
    hours_per_lang: float = 1.0
    utts_per_lang: int | None = None  # overrides hours_per_lang (tests, smoke runs)
    val_utts: int = 200  # per validation split per language
    conversations: int = 0  # conv-train per language; conv-val gets a tenth (at least 1 when > 0)
    seed: int = 0
    # Salt of the held-out-sentence hash, separate from `seed` so corpora rendered with different seeds
    # and trained together share one held-out set (no validation sentence ever enters training).
    heldout_seed: int = 0
    workers: int = 2
    engines: tuple[str, ...] | None = None  # restrict to these engines (None = all installed)
    held_out_families: tuple[str, ...] = HELD_OUT_FAMILIES
    heldout_text_fraction: float = 0.03
    rate_range: tuple[float, float] = (0.8, 1.3)
    pitch_range: tuple[float, float] = (-3.0, 3.0)  # semitones, for engines with a pitch control
    augment_prob: float = 0.6  # share of train items that get augmented; validation stays clean
    # Share of train utterances resynthesised as a WORLD pseudo-speaker (`voice_conv.py`); drawn from a
    # stream of their own, so 0 plans exactly what builds without it planned.
    convert_prob: float = 0.0
    convert_ranges: vc.ConversionRanges = field(default_factory=vc.ConversionRanges)
    min_words: int = 3
    max_words: int = 25
    conv_words: int = 40  # stop adding turns past this many words (~25-30 s, words are spoken singly)
    engine_weights: dict[str, float] = field(default_factory=lambda: dict(ENGINE_WEIGHTS))
    # Render only these splits (None = all). The plan is the same, so e.g. a corpus's conv-val alone is
    # exactly the conv-val of the full build, without rendering its conv-train first.
    splits: tuple[str, ...] | None = None


def stable_u01(*parts) -> float:
    """Deterministic uniform [0, 1) from any values (Python's hash() is salted per process)."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def item_seed(*parts) -> int:
    return int(stable_u01("seed", *parts) * 2**31)


# ------------------------------------------------------------------------------------------------ planning
def split_voices(cfg: BuildConfig, lang: str) -> tuple[list[tts.Voice], list[tts.Voice]]:
    """(training voices, held-out voices) for one language."""
    allv = [
        v for v in tts.list_voices(lang, for_training=False) if not cfg.engines or v.engine in cfg.engines
    ]
    held = [v for v in allv if not v.licence_ok_for_training or v.family in cfg.held_out_families]
    train = [v for v in allv if v not in held]
    return train, held


def text_pools(cfg: BuildConfig, lang: str) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """(train sentences, held-out sentences, translations) for one language, each list seed-shuffled."""
    sents = textmod.load_sentences(lang, min_words=cfg.min_words, max_words=cfg.max_words)
    trans: dict[str, dict[str, str]] = defaultdict(dict)
    for other in textmod.LANGS:
        if other == lang or "en" not in (lang, other):
            continue
        for a, b in textmod.load_parallel(lang, other):
            trans[a][other] = b
    train, held = [], []
    for s in sents:
        pivot = s if lang == "en" else trans.get(s, {}).get("en", s)
        (
            held if stable_u01(cfg.heldout_seed, "heldout", pivot) < cfg.heldout_text_fraction else train
        ).append(s)
    rng = np.random.default_rng(item_seed(cfg.seed, "text", lang))
    return list(rng.permutation(train)), list(rng.permutation(held)), trans


def _pick_voice(rng: np.random.Generator, voices: list[tts.Voice], weights: dict[str, float]) -> tts.Voice:
    # choose the engine first so espeak's hundreds of variants don't drown the few neural voices
    by_engine: dict[str, list[tts.Voice]] = defaultdict(list)
    for v in voices:
        by_engine[v.engine].append(v)
    engines = sorted(by_engine)
    w = np.array([weights.get(e, 1.0) for e in engines], np.float64)
    eng = engines[int(rng.choice(len(engines), p=w / w.sum()))]
    return by_engine[eng][int(rng.integers(len(by_engine[eng])))]


def _utt_item(cfg, lang, split, i, sentence, voice, trans, rng) -> dict:
    uid = f"{lang}-{split}-{i:06d}"
    return {
        "kind": "utt",
        "id": uid,
        "split": split,
        "lang": lang,
        "text": sentence,
        "voice": asdict(voice),
        "translation": {k: v for k, v in sorted(trans.get(sentence, {}).items())},
        "rate": round(float(rng.uniform(*cfg.rate_range)), 3),
        "pitch": round(float(rng.uniform(*cfg.pitch_range)), 2),
        "augment": split == "train" and bool(rng.random() < cfg.augment_prob),
        "seed": item_seed(cfg.seed, uid),
        "audio": f"audio/{split}/{lang}/{uid}.flac",
        "convert": _conversion(cfg, split, uid),
    }


def _conversion(cfg: BuildConfig, split: str, uid: str) -> dict | None:
    if split != "train" or cfg.convert_prob <= 0:  # validation voices stay the engines' own
        return None
    rng = np.random.default_rng(item_seed(cfg.seed, "convert", uid))
    if rng.random() >= cfg.convert_prob:
        return None
    return vc.draw(rng, cfg.convert_ranges).as_dict()


def plan_language(cfg: BuildConfig, lang: str) -> list[dict]:
    train_v, held_v = split_voices(cfg, lang)
    train_s, held_s, trans = text_pools(cfg, lang)
    if not train_v or not train_s:
        print(f"[corpus] {lang}: no training voices or sentences installed, skipped", file=sys.stderr)
        return []
    words = np.mean([len(s.split()) if lang != "ja" else len(s) / 2 for s in train_s[:2000]])
    n_train = cfg.utts_per_lang or int(
        cfg.hours_per_lang * 3600 / (words * SECONDS_PER_WORD + SECONDS_PER_UTT)
    )
    half = max(1, len(held_s) // 2)
    text_a, text_b = held_s[:half], held_s[half:] or held_s
    plan = {
        "train": (train_v, train_s, n_train),
        "val-unseen-voice": (held_v, train_s, cfg.val_utts),
        "val-unseen-text": (train_v, text_a, cfg.val_utts),
        "val-unseen-both": (held_v, text_b, cfg.val_utts),
    }
    items = []
    for split, (voices, sents, n) in plan.items():
        if not voices or not sents:
            continue
        rng = np.random.default_rng(item_seed(cfg.seed, "plan", lang, split))
        for i in range(n):  # cycle through the shuffled sentences so repeats come only after all were used
            voice = _pick_voice(rng, voices, cfg.engine_weights)
            items.append(_utt_item(cfg, lang, split, i, sents[i % len(sents)], voice, trans, rng))
    n_conv = cfg.conversations
    for split, voices, sents, n in (
        ("conv-train", train_v, train_s, n_conv),
        ("conv-val", held_v, held_s, (n_conv + 9) // 10 if n_conv else 0),
    ):
        rng = np.random.default_rng(item_seed(cfg.seed, "plan", lang, split))
        for i in range(n if voices and sents else 0):
            items.append(_conv_item(cfg, lang, split, i, voices, sents, rng))
    return items


def _conv_item(cfg, lang, split, i, voices, sents, rng) -> dict:
    # 2-4 distinct voices, from distinct families while there are enough (distinct-sounding speakers)
    speakers: list[tts.Voice] = []
    n_spk = min(int(rng.integers(2, 5)), len(voices))
    for attempt in range(100):
        v = _pick_voice(rng, voices, cfg.engine_weights)
        fresh_family = v.family not in {s.family for s in speakers}
        if v not in speakers and (fresh_family or attempt >= 50):
            speakers.append(v)
        if len(speakers) == n_spk:
            break
    turns, prev, n_words = [], -1, 0
    while len(turns) < len(speakers) or (n_words < cfg.conv_words and len(turns) < 12):
        spk = int(rng.choice([k for k in range(len(speakers)) if k != prev]))
        sentence = sents[int(rng.integers(len(sents)))]
        turns.append({"speaker": spk + 1, "text": sentence})
        prev, n_words = spk, n_words + textmod.count_words(sentence, lang)
    uid = f"{lang}-{split}-{i:06d}"
    return {
        "kind": "conv",
        "id": uid,
        "split": split,
        "lang": lang,
        "speakers": [asdict(v) for v in speakers],
        "turns": turns,
        "rate": round(float(rng.uniform(0.9, 1.15)), 3),
        "seed": item_seed(cfg.seed, uid),
        "augment": split == "conv-train" and bool(rng.random() < cfg.augment_prob),
        "audio": f"audio/{split}/{lang}/{uid}.flac",
    }


# ------------------------------------------------------------------------------------------------- build
def _finished_rows(path: Path) -> list[dict]:
    """The rows a run appended to `path`. A run killed while writing leaves a last line without its
    newline: it is cut off here (the item renders again), so that the next appended row starts on a
    line of its own."""
    if not path.exists():
        return []
    text = path.read_text("utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, "utf-8")
        print(f"[corpus] {path}: dropped an unfinished last line", file=sys.stderr)
    return [json.loads(line) for line in text.splitlines()]


def build(cfg: BuildConfig) -> dict[str, int]:
    out = Path(cfg.out)
    (out / ".partial").mkdir(parents=True, exist_ok=True)
    items = [it for lang in cfg.langs for it in plan_language(cfg, lang)]
    if cfg.splits is not None:
        items = [it for it in items if it["split"] in cfg.splits]
    done: dict[str, dict] = {}
    for split in SPLITS:
        for row in _finished_rows(out / ".partial" / f"{split}.jsonl"):
            if (out / row["audio"]).exists():
                done[row["id"]] = row
    todo = [(it, str(out)) for it in items if it["id"] not in done]
    print(
        f"[corpus] {len(items)} items planned, {len(done)} already done, {len(todo)} to render",
        file=sys.stderr,
    )
    t0, failures = time.time(), []
    with contextlib.ExitStack() as stack:
        handles = {
            s: stack.enter_context(open(out / ".partial" / f"{s}.jsonl", "a", encoding="utf-8"))
            for s in SPLITS
        }
        results = map(render, todo)
        if cfg.workers > 1 and len(todo) > 1:
            pool = stack.enter_context(get_context("fork").Pool(cfg.workers, initializer=init_worker))
            results = pool.imap_unordered(render, todo, chunksize=4)
        for n, (split, row, err) in enumerate(results, 1):
            if err:
                failures.append(err)
                continue
            # appended as each item finishes, so a killed run resumes where it stopped
            handles[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            handles[split].flush()
            done[row["id"]] = row
            if n % 200 == 0:
                print(f"[corpus] {n}/{len(todo)} in {time.time() - t0:.0f}s", file=sys.stderr)
    return _write_manifests(cfg, items, done, failures, time.time() - t0)


def _write_manifests(cfg, items, done, failures, seconds) -> dict[str, int]:
    out, counts, hours = Path(cfg.out), Counter(), Counter()
    planned = {it["id"] for it in items}
    for split in SPLITS:
        rows = sorted(
            (r for r in done.values() if r["split"] == split and r["id"] in planned), key=lambda r: r["id"]
        )
        if not rows:
            continue
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
        hours[split] = round(sum(r["duration"] for r in rows) / 3600, 3)
    cfg_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    summary = {
        "config": cfg_json,
        "utterances": dict(counts),
        "hours": dict(hours),
        "failures": failures,
        "render_seconds": round(seconds, 1),
    }
    (out / "build.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), "utf-8")
    if failures:
        print(f"[corpus] {len(failures)} items failed (see build.json)", file=sys.stderr)
    return dict(counts)


def _split_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(filter(None, text.split(",")))
    unknown = sorted(set(names) - set(SPLITS))
    if unknown or not names:
        raise SystemExit(
            f"--splits: unknown split(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SPLITS)}"
        )
    return names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m granite_asr.data.corpus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge corpus manifests into one (paths rewritten, ids kept unique)")
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("sources", nargs="+", type=Path)
    b = sub.add_parser("build", help="synthesise a corpus")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--langs", default="en,fr,de,es,pt,ja")
    b.add_argument("--hours-per-lang", type=float, default=1.0)
    b.add_argument(
        "--utts-per-lang", type=int, default=None, help="train utterances per language (overrides hours)"
    )
    b.add_argument("--val-utts", type=int, default=200, help="utterances per validation split per language")
    b.add_argument("--conversations", type=int, default=0, help="conv-train conversations per language")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--heldout-seed", type=int, default=0, help="held-out sentence salt; keep it equal across corpora"
    )
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--engines", default=None, help="comma list to restrict engines, e.g. espeak,flite,piper")
    b.add_argument("--augment-prob", type=float, default=0.6)
    b.add_argument(
        "--convert-prob",
        type=float,
        default=0.0,
        help="share of train utterances resynthesised as WORLD pseudo-speakers (needs pyworld-prebuilt)",
    )
    b.add_argument("--engine-weights", default="", help="e.g. kokoro=2,espeak=0.5 (overrides defaults)")
    b.add_argument("--splits", default=None, help=f"comma list: render only these of {','.join(SPLITS)}")
    a = ap.parse_args(argv)
    if a.cmd == "merge":
        print(json.dumps({"rows": merge_manifests(a.out, a.sources), "out": str(a.out)}))
        return
    weights = dict(ENGINE_WEIGHTS)
    for kv in filter(None, a.engine_weights.split(",")):
        k, v = kv.split("=")
        weights[k] = float(v)
    cfg = BuildConfig(
        out=a.out,
        langs=tuple(a.langs.split(",")),
        hours_per_lang=a.hours_per_lang,
        utts_per_lang=a.utts_per_lang,
        val_utts=a.val_utts,
        conversations=a.conversations,
        seed=a.seed,
        heldout_seed=a.heldout_seed,
        workers=a.workers,
        engines=tuple(a.engines.split(",")) if a.engines else None,
        augment_prob=a.augment_prob,
        convert_prob=a.convert_prob,
        engine_weights=weights,
        splits=_split_names(a.splits),
    )
    counts = build(cfg)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
