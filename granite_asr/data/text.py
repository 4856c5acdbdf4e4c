"""Offline sentence sources for the synthetic speech corpus (en, fr, de, es, pt, ja).

Sources, all installed by ``scripts/setup_data.sh`` (see shared DATA.md §2):

* Debian ``fortunes`` (en), ``fortunes-de``, ``fortunes-es``, ``fortunes-br`` (pt): monolingual sentences.
* gettext ``.mo`` catalogs under /usr/share/locale and the extra catalogs the setup script unpacks:
  parallel en↔X pairs (msgid is English). fr and ja have no fortunes, so their monolingual text is the
  target side of these pairs.
* ``debian-handbook`` HTML (optional): paragraphs align across languages page by page; a paragraph pair
  is split into sentence pairs only when both sides split into the same number of sentences.

Everything returned is filtered to "speakable" text: no digits, URLs, markup, format specifiers or
accelerators, because a TTS engine would read those in ways the transcript cannot predict.
"""

from __future__ import annotations

import html
import os
import re
import struct
import unicodedata
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

from .. import char_vocab

LANGS = ("en", "fr", "de", "es", "pt", "ja")
FORTUNE_DIRS = {
    "en": ["/usr/share/games/fortunes"],
    "de": ["/usr/share/games/fortunes/de"],
    "es": ["/usr/share/games/fortunes/es"],
    "pt": ["/usr/share/games/fortunes"],
}
# fortunes-br installs one file into the English directory; English fortunes must skip it.
PT_FORTUNE_FILES = ("brasil",)
LOCALE_DIRS = {
    "fr": ("fr", "fr_FR"),
    "de": ("de", "de_DE"),
    "es": ("es", "es_ES"),
    "pt": ("pt_BR", "pt"),
    "ja": ("ja", "ja_JP"),
}
HANDBOOK_DIR = Path("/usr/share/doc/debian-handbook/html")
HANDBOOK_LANGS = {"en": "en-US", "fr": "fr-FR", "de": "de-DE", "es": "es-ES", "pt": "pt-BR", "ja": "ja-JP"}
DEFAULT_TEXT_DIR = "/usr/local/share/granite-asr/text"

# Markup, format specifiers, accelerators, paths, URLs, digits, file extensions (".ent"), superscripts.
_BAD = re.compile(
    r"[\u00b2\u00b3\u00b9\u2070-\u209f]|%|\{|\}|<|>|&|_|\\|/|@|#|\$|\*|=|\||~|\^|`|\[|\]|https?:|www\."
    r"|\d|\t|\.\.\w|(^|\s)\.\w|\w\.\w"
)
_CAMEL = re.compile(r"[a-zà-ÿ][A-ZÀ-Ý]")  # "LibreOffice", "setValue": identifiers, not speech
_SENT_SPLIT = re.compile(r"(?<=[.!?…])\s+(?=[\"“«¡¿(]?[A-ZÀ-ÝÄÖÜ])")
_JA_SPLIT = re.compile(r"(?<=[。！？])")
# Parentheses, brackets and most symbols are not spoken, so the transcript would not match the audio.
_OK_PUNCT = set(" .,;:!?'\"-–—’‘“”«»¡¿…、。！？「」『』・ー〜")
# \w minus digits/underscore (already rejected by _BAD) = letters of any script, incl. combining marks
_NOT_LETTER_OR_PUNCT = re.compile("[^\\w" + re.escape("".join(sorted(_OK_PUNCT))) + "]")
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
# Acronyms ("GREG", "AIs") and option-like tokens ("-c", "--count") are read unpredictably by TTS.
_UNSPEAKABLE = re.compile(r"[A-Z]{2,}|(^|\s)[-–—]|--")


def normalize(text: str) -> str:
    """NFC, single spaces, trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def count_words(text: str, lang: str) -> int:
    # Japanese has no spaces; ~2 characters per word is close enough for length filtering.
    return max(1, len(text) // 2) if lang == "ja" else len(text.split())


def is_speakable(text: str, lang: str) -> bool:
    """True if a TTS engine will read exactly what the transcript says."""
    if not text or _BAD.search(text) or _CAMEL.search(text) or _UNSPEAKABLE.search(text):
        return False
    if _NOT_LETTER_OR_PUNCT.search(text):
        return False
    if lang == "ja":
        # Latin letters in Japanese would be spelled out or read in English by the Japanese voices.
        return not re.search(r"[A-Za-z]", text) and bool(_CJK.search(text))
    # must contain lower case: ALL-CAPS strings are headings/labels that TTS may spell out
    return not _CJK.search(text) and text.upper() != text


def _keep(text: str, lang: str, min_words: int, max_words: int) -> bool:
    return min_words <= count_words(text, lang) <= max_words and is_speakable(text, lang)


def split_sentences(text: str, lang: str) -> list[str]:
    parts = _JA_SPLIT.split(text) if lang == "ja" else _SENT_SPLIT.split(text)
    return [normalize(p) for p in parts if normalize(p)]


# ----------------------------------------------------------------------------------------------- .mo files
def read_mo(path: str | os.PathLike) -> dict[str, str]:
    """Parse a GNU gettext .mo file into {msgid: msgstr} (singular entries only, context stripped)."""
    data = Path(path).read_bytes()
    if len(data) < 28:
        return {}
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        return {}
    _rev, n, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
    entries = {}
    charset = "utf-8"
    for i in range(n):
        olen, opos = struct.unpack(order + "2I", data[orig_off + 8 * i : orig_off + 8 * i + 8])
        tlen, tpos = struct.unpack(order + "2I", data[trans_off + 8 * i : trans_off + 8 * i + 8])
        msgid, msgstr = data[opos : opos + olen], data[tpos : tpos + tlen]
        if not msgid:  # the header: pick up the charset
            m = re.search(rb"charset=([\w-]+)", msgstr)
            charset = m.group(1).decode() if m else charset
            continue
        if b"\x00" in msgid:  # plural forms: msgstr holds several variants, skip them
            continue
        try:
            key = msgid.decode(charset).split("\x04")[-1]  # drop msgctxt
            entries[key] = msgstr.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return entries


def _text_dirs() -> list[Path]:
    extra = os.environ.get("GRANITE_ASR_TEXT_DIR", DEFAULT_TEXT_DIR)
    return [Path("/usr/share/locale"), Path(extra) / "locale"]


def mo_files(lang: str, recorded_only: bool = True) -> list[Path]:
    """The language's catalogs, limited to those in `catalogs.txt` (see `recorded_catalogs`) unless
    `recorded_only` is False."""
    files = []
    for root in _text_dirs():
        for loc in LOCALE_DIRS.get(lang, ()):  # English has no catalog of its own: it is the msgid side
            d = root / loc / "LC_MESSAGES"
            if d.is_dir():
                files += sorted(d.glob("*.mo"))
    recorded = recorded_catalogs() if recorded_only else None
    if recorded is None:
        return files
    files = [f for f in files if _catalog_key(f) in recorded]
    wanted = {k for k in recorded if k.split("/")[0] in LOCALE_DIRS.get(lang, ())}
    missing = sorted(wanted - {_catalog_key(f) for f in files})
    if missing:
        warnings.warn(
            f"text pools ({lang}): {len(missing)} of {len(wanted)} recorded gettext catalogs are not "
            f"installed (e.g. {', '.join(missing[:3])}), so its sentences differ from the recorded corpora "
            "and word LMs; scripts/setup_data.sh installs the text sources",
            stacklevel=2,
        )
    return files


CATALOGS = Path(__file__).with_name("catalogs.txt")


def _catalog_key(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}"  # <locale>/<domain>


@cache
def recorded_catalogs() -> frozenset[str] | None:
    """The catalogs (`<locale>/<domain>`) the shipped corpora and word LMs were built from. Catalogs come
    with whatever packages a machine has (chromium alone adds hundreds of sentences), so the pools read only
    these, and warn when some are missing: the same seed then gives the same sentences on any machine
    set up alike. `GRANITE_ASR_CATALOGS=all` reads every installed catalog instead;
    `python -c "from granite_asr.data import text; text.write_catalogs()"` regenerates the list."""
    if os.environ.get("GRANITE_ASR_CATALOGS") == "all":
        return None
    return frozenset(CATALOGS.read_text("utf-8").split())


def write_catalogs(path: Path = CATALOGS) -> int:
    """Record every installed catalog of every language in `path`; returns the count."""
    keys = sorted({_catalog_key(f) for lang in LANGS for f in mo_files(lang, recorded_only=False)})
    path.write_text("".join(k + "\n" for k in keys), "utf-8")
    return len(keys)


@cache
def _mo_pairs(lang: str) -> tuple[tuple[str, str], ...]:
    """Sentence-like (english, target) pairs from every catalog; one target per English source."""
    votes: dict[str, Counter] = {}
    for path in mo_files(lang):
        for src, tgt in read_mo(path).items():
            src, tgt = normalize(src), normalize(tgt)
            if not tgt or src == tgt or not _keep(src, "en", 3, 30) or not _keep(tgt, lang, 2, 40):
                continue
            votes.setdefault(src, Counter())[tgt] += 1
    # most frequent translation wins; ties broken alphabetically so the result never depends on file order
    return tuple(sorted((s, min(c, key=lambda t: (-c[t], t))) for s, c in votes.items()))


# ----------------------------------------------------------------------------------------------- handbook
_PARA = re.compile(r'<div class="para">(.*?)</div>', re.S)


def _clean_para(raw: str) -> str:
    # Inline code/filenames/commands are not speakable; turn them into a marker that fails the filters.
    raw = re.sub(r"<(code|command|span class=\"command\"|acronym)[^>]*>.*?</\1>", " # ", raw, flags=re.S)
    raw = re.sub(r"<[^>]+>", " ", raw)
    # dropping markup leaves "tool, cacti ." behind; no language puts a space before . or ,
    return re.sub(r"\s+([.,])", r"\1", normalize(html.unescape(raw)))


@cache
def _handbook_paras(lang: str) -> tuple[tuple[str, ...], ...]:
    d = HANDBOOK_DIR / HANDBOOK_LANGS[lang]
    if not d.is_dir():
        return ()
    pages = sorted(p.name for p in d.glob("*.html"))
    return tuple(tuple(_clean_para(p) for p in _PARA.findall((d / n).read_text("utf-8"))) for n in pages)


@cache
def _handbook_pairs(lang: str) -> tuple[tuple[str, str], ...]:
    en, xx = _handbook_paras("en"), _handbook_paras(lang)
    if not en or len(en) != len(xx):
        return ()
    pairs = []
    for page_en, page_xx in zip(en, xx, strict=True):
        if len(page_en) != len(page_xx):
            continue
        for p_en, p_xx in zip(page_en, page_xx, strict=True):
            s_en, s_xx = split_sentences(p_en, "en"), split_sentences(p_xx, lang)
            if p_en == p_xx or len(s_en) != len(s_xx):  # untranslated or unalignable paragraph
                continue
            pairs += [
                (a, b)
                for a, b in zip(s_en, s_xx, strict=True)
                if a != b and _keep(a, "en", 3, 30) and _keep(b, lang, 2, 40)
            ]
    return tuple(pairs)


# ----------------------------------------------------------------------------------------------- fortunes
def _fortune_files(lang: str) -> list[Path]:
    files = []
    for d in FORTUNE_DIRS.get(lang, []):
        for p in sorted(Path(d).glob("*")):
            if not p.is_file() or p.is_symlink() or p.suffix in (".dat", ".u8"):
                continue
            if (lang == "pt") == (p.name in PT_FORTUNE_FILES):
                files.append(p)
    return files


@cache
def _fortune_sentences(lang: str) -> tuple[str, ...]:
    out = []
    for path in _fortune_files(lang):
        for entry in path.read_text("utf-8", errors="replace").split("\n%\n"):
            # drop attribution lines ("-- Author") and dialogue/indented verse that would not read as prose
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith(("--", "—", "-"))]
            out += split_sentences(" ".join(lines), lang)
    return tuple(out)


# ----------------------------------------------------------------------------------------------- public API
def load_parallel(src: str, tgt: str) -> list[tuple[str, str]]:
    """Sentence pairs (src_text, tgt_text); one of src/tgt must be "en". Deterministic, deduplicated."""
    if src == tgt or "en" not in (src, tgt):
        raise ValueError(f"need an en<->X pair, got {src}->{tgt}")
    other = tgt if src == "en" else src
    best: dict[str, str] = {}
    for en, xx in (*_mo_pairs(other), *_handbook_pairs(other)):
        best.setdefault(en, xx)
    seen_x, pairs = set(), []
    for en, xx in sorted(best.items()):
        if xx not in seen_x:
            seen_x.add(xx)
            pairs.append((en, xx) if src == "en" else (xx, en))
    return pairs


def load_sentences(lang: str, *, min_words: int = 3, max_words: int = 30) -> list[str]:
    """Unique speakable sentences of one language, sorted (callers shuffle with their own seed)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")
    pool: list[str] = list(_fortune_sentences(lang))
    if lang == "en":
        for other in LANGS[1:]:
            pool += [en for en, _ in _mo_pairs(other)] + [en for en, _ in _handbook_pairs(other)]
    else:
        pool += [xx for _, xx in _mo_pairs(lang)] + [xx for _, xx in _handbook_pairs(lang)]
        # monolingual handbook text, aligned or not; some paragraphs were left in English, drop those
        english = {s for page in _handbook_paras("en") for para in page for s in split_sentences(para, "en")}
        for page in _handbook_paras(lang):
            for para in page:
                pool += [s for s in split_sentences(para, lang) if s not in english]
    return sorted({s for s in map(normalize, pool) if _keep(s, lang, min_words, max_words)})


def to_kana(text: str) -> str:
    """Katakana reading of Japanese text (for espeak-ng/mbrola, which cannot read kanji; the CTC targets)."""
    return char_vocab.kana_reading(text)


def tts_text(text: str, lang: str, engine: str) -> str:
    """The string an engine should be fed for a transcript ``text`` (differs only for kana-only engines)."""
    if lang == "ja" and engine in ("espeak", "mbrola"):
        return to_kana(text)
    return text
