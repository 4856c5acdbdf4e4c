"""`granite-asr eval MANIFEST`: WER / CER / BLEU / RTFx per language and direction, as a table and JSON.

Scoring follows the Open ASR Leaderboard and the Granite cards (SPEC §8.3, PEERS §6.4):
- English WER after Whisper's English normaliser; fr/de/es/pt WER after Whisper's basic normaliser;
- Japanese CER (basic normaliser, spaces removed), since Japanese has no word spaces;
- translation BLEU with sacrebleu (its `ja-mecab`-free "char" tokenisation for Japanese targets), and
  the share of outputs written in the target language (langid.py over the six languages): BLEU near zero
  cannot tell a weak translation from an answer in the wrong language, a failure users see at once;
- RTFx = Σ audio seconds / Σ compute seconds, model loading and a warm-up batch excluded.

The manifest is JSONL with `audio` (relative to the manifest), `text`, `lang` and optional
`translation: {lang: text}` (the corpus builder's format). `by="engine"` (any row field: voice, family,
…) adds a breakdown per language and value, to see which voices or conditions carry the errors;
`report.write_rows(path)` writes every row's reference and hypothesis as JSONL. A row whose audio cannot
be read is skipped with its file and problem in `report.errors`; the rest are scored. Each language's
rows are read and decoded `chunk_rows` at a time, so a manifest of any size fits in memory.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from tqdm import tqdm

from .audio.io import AudioError, load_audio
from .engine.engine import Engine
from .options import DecodeOptions, TranscribeOptions

# Rows read and decoded at a time: a manifest's audio is never all in memory (10 000 rows of 10 s
# would be 6.4 GB as float32); large enough that the engine still fills its batches.
CHUNK_ROWS = 128


def _normalizers():
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer(), BasicTextNormalizer()


def normalize(text: str, lang: str) -> str:
    english, basic = _normalizers()
    out = english(text) if lang == "en" else basic(text)
    if lang == "ja":
        out = "".join(out.split())
    return " ".join(out.split())


def error_rate(refs: list[str], hyps: list[str], lang: str, unit: str | None = None) -> float:
    """Corpus-level error rate in percent over normalised text; empty references are skipped.
    `unit`: "word" or "char"; default char for ja (no word spaces), word otherwise."""
    import jiwer

    pairs = [(normalize(r, lang), normalize(h, lang)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return float("nan")
    r, h = zip(*pairs, strict=True)
    unit = unit or ("char" if lang == "ja" else "word")
    fn = jiwer.cer if unit == "char" else jiwer.wer
    return 100.0 * fn(list(r), list(h))


def reading_error_rate(refs: list[str], hyps: list[str]) -> float | None:
    """Japanese CER on the katakana reading of both sides, in percent (None without pyopenjtalk, which
    `scripts/setup_data.sh` installs). The char CTC head spells Japanese in katakana only (SPEC §3.6), so
    against kanji text its CER is meaningless (> 100 %); on the reading it measures what it heard. Only
    katakana are compared: spaces, punctuation and Latin letters drop (a wrong-script answer counts as deletions)."""
    try:
        import jiwer
        import pyopenjtalk  # noqa: F401  (to_kana imports it lazily: fail here, not mid-eval)
    except ImportError:
        return None
    from .data.text import to_kana

    def reading(text: str) -> str:
        # Japanese script only, before the reading: pyopenjtalk would spell Latin letters out in katakana
        kept = "".join(c if _japanese(c) else " " for c in text)
        return "".join(c for c in to_kana(kept) if "\u30a1" <= c <= "\u30fc")

    pairs = [(reading(r), reading(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return float("nan")
    r, h = zip(*pairs, strict=True)
    return 100.0 * jiwer.cer(list(r), list(h))


def _japanese(c: str) -> bool:
    """Kana, CJK ideographs (and extension A), the iteration mark 々."""
    return (
        "\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" or c == "\u3005"
    )


def bleu(refs: list[str], hyps: list[str], target: str) -> float:
    import sacrebleu

    tokenize = "char" if target == "ja" else "13a"
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score


@cache
def _language_identifier():
    from langid.langid import LanguageIdentifier, model  # loads its model once (~6 s)

    from .data.text import LANGS  # the six languages the corpora and the Granite 4.1 cards cover

    ident = LanguageIdentifier.from_modelstring(model)
    ident.set_languages(list(LANGS))  # a private instance: langid's module-level one stays untouched
    return ident


def target_language_rate(hyps: list[str], target: str) -> float:
    """Percent of `hyps` identified as `target` among the six languages; an empty output is a miss."""
    if not hyps:
        return float("nan")
    ident = _language_identifier()
    hits = sum(bool(h.strip()) and ident.classify(h)[0] == target for h in hyps)
    return 100.0 * hits / len(hyps)


@dataclass
class EvalReport:
    model: str
    manifest: str
    mode: str
    options: dict = field(default_factory=dict)  # decoding options that change the scores
    asr: dict = field(default_factory=dict)  # lang → {"metric", "value", "n", "audio_s"}
    translation: dict = field(default_factory=dict)  # "src→tgt" → {"bleu", "in_target", "n"}
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    examples: list = field(default_factory=list)
    by: str | None = None  # the row field of `groups`
    groups: dict = field(default_factory=dict)  # lang → value of `by` → {"value", "cer", "n"}
    errors: list = field(default_factory=list)  # rows skipped: {"id", "error"}
    rows: list = field(default_factory=list)  # every scored row: id, lang, ref, hyp (not in to_dict)

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / self.compute_seconds if self.compute_seconds else float("nan")

    def to_dict(self) -> dict:
        out = {**asdict(self), "rtfx": self.rtfx}
        del out["rows"]
        return out

    def write_rows(self, path: str | Path) -> None:
        """One JSON line per scored row: id, lang, ref, hyp (and the `by` field)."""
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)

    def table(self) -> str:
        lines = [f"{'lang':<8}{'metric':<7}{'value':>8}{'n':>7}{'CER':>8}", "-" * 38]
        for lang, r in sorted(self.asr.items()):
            lines.append(f"{lang:<8}{r['metric']:<7}{r['value']:>8.2f}{r['n']:>7}{r['cer']:>8.2f}")
            if r.get("kana_cer") is not None:  # Japanese on the katakana reading
                lines.append(f"{lang:<8}{'kana':<7}{r['kana_cer']:>8.2f}{r['n']:>7}")
        if self.translation:
            lines += ["", f"{'dir':<8}{'metric':<7}{'value':>8}{'n':>7}{'in target lang':>16}", "-" * 46]
        for d, r in sorted(self.translation.items()):
            lines.append(f"{d:<8}{'BLEU':<7}{r['bleu']:>8.2f}{r['n']:>7}{r['in_target']:>15.0f}%")
        lines.append(f"RTFx {self.rtfx:.1f} ({self.audio_seconds:.0f} s audio, mode {self.mode})")
        if self.groups:
            lines += ["", f"{'lang':<8}{self.by:<24}{'value':>8}{'n':>7}{'CER':>8}", "-" * 55]
            for lang, groups in sorted(self.groups.items()):
                for g, r in sorted(groups.items(), key=lambda kv: -kv[1]["value"]):
                    lines.append(f"{lang:<8}{g[:23]:<24}{r['value']:>8.2f}{r['n']:>7}{r['cer']:>8.2f}")
        if self.errors:
            lines.append(f"{len(self.errors)} row(s) skipped: unreadable audio (see errors)")
        return "\n".join(lines)


def _timed(engine: Engine, audios, options) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = engine.run(audios, options)
    return out, time.perf_counter() - t0


def evaluate(
    model,
    manifest: str | Path,
    *,
    mode: str = "auto",
    beam_size: int = 1,
    batch_size: int | None = None,
    word_lm: str = "auto",
    ctc_tempo: float = DecodeOptions.ctc_tempo,
    language_hint: bool = True,
    limit: int | None = None,
    translate: bool = True,
    model_name: str = "",
    by: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = False,
) -> EvalReport:
    """Transcribe (and translate, for 2b) every manifest row; score per language and direction (and per
    value of the row field `by`). Audio is read `chunk_rows` rows at a time, so memory stays bounded on
    a manifest of any size; the scores do not depend on it."""
    manifest = Path(manifest)
    rows = [json.loads(x) for x in manifest.read_text("utf-8").splitlines() if x.strip()][:limit]
    engine = Engine(model)
    decode = DecodeOptions(
        mode=mode, beam_size=beam_size, batch_size=batch_size, word_lm=word_lm, ctc_tempo=ctc_tempo
    )
    mode_run = decode.resolved_mode(model.variant, model.config.auto_mode)
    report = EvalReport(
        model=model_name, manifest=str(manifest), mode=mode_run,
        options={"beam_size": beam_size, "word_lm": word_lm, "ctc_tempo": ctc_tempo, "language_hint": language_hint},
        by=by,
    )  # fmt: skip
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r)
    translate = translate and model.variant == "ar" and report.mode == "ar"
    job = _Job(engine, report, manifest, decode, language_hint, by, max(1, chunk_rows), translate)
    with tqdm(total=len(rows), unit="row", desc="evaluating", disable=not progress, file=sys.stderr) as bar:
        for lang, items in sorted(by_lang.items()):
            job.language(lang, items, bar)
    return report


@dataclass
class _Job:
    """One evaluation's state, so each language is read and decoded chunk by chunk."""

    engine: Engine
    report: EvalReport
    manifest: Path
    decode: DecodeOptions
    language_hint: bool
    by: str | None
    chunk_rows: int
    translate: bool
    warm: bool = False

    def language(self, lang: str, items: list[dict], bar) -> None:
        # without the hint, what the user gets who names no language (the word-LM search guesses it)
        hint = lang if self.language_hint else None
        opts = TranscribeOptions(language=hint, decode=self.decode, progress=False)
        report, kept, hyps = self.report, [], []
        directions: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for start in range(0, len(items), self.chunk_rows):
            chunk, audios = _load_rows(self.manifest, items[start : start + self.chunk_rows], report)
            bar.update(min(self.chunk_rows, len(items) - start))
            if not chunk:
                continue
            if not self.warm:  # warm-up, not timed
                self.engine.run(audios[:1], opts)
                self.warm = True
            outs, secs = _timed(self.engine, audios, opts)
            report.audio_seconds += sum(r["_seconds"] for r in chunk)
            report.compute_seconds += secs
            kept += chunk
            hyps += [o.text for o in outs]
            if self.translate:
                _translate(self.engine, lang, chunk, audios, self.decode, directions)
        if not kept:
            return
        report.asr[lang] = {**_scores(kept, hyps, lang), "audio_s": sum(r["_seconds"] for r in kept)}
        if lang == "ja":
            report.asr[lang]["kana_cer"] = reading_error_rate([r["text"] for r in kept], hyps)
        by = self.by
        report.rows += [
            {"id": _key(r), "lang": lang, "ref": r["text"], "hyp": h, **({by: r.get(by)} if by else {})}
            for r, h in zip(kept, hyps, strict=True)
        ]
        report.examples += report.rows[-len(kept) :][:3]
        if by:
            report.groups[lang] = _grouped(kept, hyps, lang, by)
        for tgt, (refs, outs) in sorted(directions.items()):
            report.translation[f"{lang}→{tgt}"] = {
                "bleu": bleu(refs, outs, tgt),
                "in_target": target_language_rate(outs, tgt),
                "n": len(refs),
            }


def _key(row: dict) -> str:
    return row["id"] if "id" in row else row["audio"]


def _load_rows(manifest: Path, rows: list[dict], report: EvalReport) -> tuple[list[dict], list]:
    """The rows whose audio could be read (each with its `_seconds`) and their samples; a row that
    cannot be read is reported (file and problem) and skipped."""
    kept, audio = [], []
    for r in rows:
        try:
            samples = load_audio(manifest.parent / r["audio"])
        except AudioError as e:
            print(f"warning: skipping row {_key(r)}: {e}", file=sys.stderr)
            report.errors.append({"id": _key(r), "error": str(e)})
            continue
        kept.append({**r, "_seconds": len(samples) / 16000})
        audio.append(samples)
    return kept, audio


def _scores(items: list[dict], hyps: list[str], lang: str) -> dict:
    refs = [r["text"] for r in items]
    return {
        "metric": "CER" if lang == "ja" else "WER",
        "value": error_rate(refs, hyps, lang),
        # CER for every language too: it tracks an acoustic model long before its words come right
        "cer": error_rate(refs, hyps, lang, unit="char"),
        "n": len(items),
    }


def _grouped(items: list[dict], hyps: list[str], lang: str, by: str) -> dict:
    """value of the row field `by` (str; "?" where absent) → the language's scores on those rows."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(items):
        groups[str(r.get(by, "?"))].append(i)
    return {g: _scores([items[i] for i in idx], [hyps[i] for i in idx], lang) for g, idx in groups.items()}


def _translate(engine, lang, items, audios, decode, directions) -> None:
    """Translate one chunk of a language's rows into each target its rows carry (English, or from
    English every language named); (references, outputs) accumulate per target in `directions`."""
    targets = ["en"] if lang != "en" else sorted({t for r in items for t in (r.get("translation") or {})})
    for tgt in targets:
        pick = [i for i, r in enumerate(items) if tgt in (r.get("translation") or {})]
        if not pick:
            continue
        opts = TranscribeOptions(
            task="translate", language=lang, target_language=tgt, decode=decode, progress=False
        )
        outs = engine.run([audios[i] for i in pick], opts)
        directions[tgt][0].extend(items[i]["translation"][tgt] for i in pick)
        directions[tgt][1].extend(o.text for o in outs)
