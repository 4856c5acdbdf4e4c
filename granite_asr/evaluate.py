"""`granite-asr eval MANIFEST`: WER / CER / BLEU / RTFx per language and direction, as a table and JSON.

Scoring follows the Open ASR Leaderboard and the Granite cards (SPEC §8.3, PEERS §6.4):
- English WER after Whisper's English normaliser; fr/de/es/pt WER after Whisper's basic normaliser;
- Japanese CER (basic normaliser, spaces removed), since Japanese has no word spaces;
- translation BLEU with sacrebleu (its `ja-mecab`-free "char" tokenisation for Japanese targets);
- RTFx = Σ audio seconds / Σ compute seconds, model loading and a warm-up batch excluded.

The manifest is JSONL with `audio` (relative to the manifest), `text`, `lang` and optional
`translation: {lang: text}` (the corpus builder's format).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .audio.io import load_audio
from .engine.engine import Engine
from .options import DecodeOptions, TranscribeOptions


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


@dataclass
class EvalReport:
    model: str
    manifest: str
    mode: str
    options: dict = field(default_factory=dict)  # decoding options that change the scores
    asr: dict = field(default_factory=dict)  # lang → {"metric", "value", "n", "audio_s"}
    translation: dict = field(default_factory=dict)  # "src→tgt" → {"bleu", "n"}
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    examples: list = field(default_factory=list)

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / self.compute_seconds if self.compute_seconds else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "rtfx": self.rtfx}

    def table(self) -> str:
        lines = [f"{'lang':<8}{'metric':<7}{'value':>8}{'n':>7}{'CER':>8}", "-" * 38]
        for lang, r in sorted(self.asr.items()):
            lines.append(f"{lang:<8}{r['metric']:<7}{r['value']:>8.2f}{r['n']:>7}{r['cer']:>8.2f}")
            if r.get("kana_cer") is not None:  # Japanese on the katakana reading
                lines.append(f"{lang:<8}{'kana':<7}{r['kana_cer']:>8.2f}{r['n']:>7}")
        for d, r in sorted(self.translation.items()):
            lines.append(f"{d:<8}{'BLEU':<7}{r['bleu']:>8.2f}{r['n']:>7}")
        lines.append(f"RTFx {self.rtfx:.1f} ({self.audio_seconds:.0f} s audio, mode {self.mode})")
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
    language_hint: bool = True,
    limit: int | None = None,
    translate: bool = True,
    model_name: str = "",
) -> EvalReport:
    """Transcribe (and translate, for 2b) every manifest row; score per language and direction."""
    manifest = Path(manifest)
    rows = [json.loads(x) for x in manifest.read_text("utf-8").splitlines() if x.strip()][:limit]
    engine = Engine(model)
    decode = DecodeOptions(mode=mode, beam_size=beam_size, batch_size=batch_size, word_lm=word_lm)
    mode_run = decode.resolved_mode(model.variant, model.config.auto_mode)
    report = EvalReport(
        model=model_name, manifest=str(manifest), mode=mode_run,
        options={"beam_size": beam_size, "word_lm": word_lm, "language_hint": language_hint},
    )  # fmt: skip
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r)
    audio = {r["id"] if "id" in r else r["audio"]: load_audio(manifest.parent / r["audio"]) for r in rows}
    key = lambda r: r["id"] if "id" in r else r["audio"]  # noqa: E731
    warm = [audio[key(rows[0])]] if rows else []
    engine.run(warm, TranscribeOptions(decode=decode, progress=False))  # warm-up, not timed
    for lang, items in sorted(by_lang.items()):
        # without the hint, what the user gets who names no language (the word-LM search guesses it)
        opts = TranscribeOptions(language=lang if language_hint else None, decode=decode, progress=False)
        outs, secs = _timed(engine, [audio[key(r)] for r in items], opts)
        hyps = [o.text for o in outs]
        dur = sum(len(audio[key(r)]) for r in items) / 16000
        report.audio_seconds += dur
        report.compute_seconds += secs
        metric = "CER" if lang == "ja" else "WER"
        report.asr[lang] = {
            "metric": metric,
            "value": error_rate([r["text"] for r in items], hyps, lang),
            # CER for every language too: it tracks an acoustic model long before its words come right
            "cer": error_rate([r["text"] for r in items], hyps, lang, unit="char"),
            "n": len(items),
            "audio_s": dur,
        }
        if lang == "ja":
            report.asr[lang]["kana_cer"] = reading_error_rate([r["text"] for r in items], hyps)
        report.examples += [
            {"id": key(r), "lang": lang, "ref": r["text"], "hyp": h}
            for r, h in zip(items[:3], hyps, strict=False)
        ]
        if translate and model.variant == "ar" and report.mode == "ar":
            _eval_translation(engine, report, lang, items, [audio[key(r)] for r in items], decode)
    return report


def _eval_translation(engine, report, lang, items, audios, decode) -> None:
    targets = ["en"] if lang != "en" else sorted({t for r in items for t in (r.get("translation") or {})})
    for tgt in targets:
        pick = [i for i, r in enumerate(items) if tgt in (r.get("translation") or {})]
        if not pick:
            continue
        opts = TranscribeOptions(
            task="translate", language=lang, target_language=tgt, decode=decode, progress=False
        )
        outs = engine.run([audios[i] for i in pick], opts)
        refs = [items[i]["translation"][tgt] for i in pick]
        report.translation[f"{lang}→{tgt}"] = {
            "bleu": bleu(refs, [o.text for o in outs], tgt),
            "n": len(pick),
        }
