"""The character vocabulary of the char CTC head (SPEC §3.6): 348 labels, blank = 0.

    chr(n) → n for n = 32..255 (printable ASCII + Latin-1);  Katakana U+30A1..U+30FC → 256..347;
    0 = blank; 1..31 unused.

Text outside the vocabulary (kanji, hiragana, other scripts) is mapped where a faithful mapping exists
(hiragana → katakana; NFC/NFKC folding) and otherwise dropped, so CTC targets and forced alignment
always see the same symbols.
"""

from __future__ import annotations

import re
import unicodedata

BLANK = 0
SIZE = 348
_KATA_FIRST, _KATA_LAST = 0x30A1, 0x30FC
_HIRA_FIRST, _HIRA_LAST = 0x3041, 0x3096


def char_to_id(ch: str) -> int | None:
    o = ord(ch)
    if 32 <= o <= 255:
        return o
    if _HIRA_FIRST <= o <= _HIRA_LAST:  # same reading; the head only has katakana
        o += _KATA_FIRST - _HIRA_FIRST
    if _KATA_FIRST <= o <= _KATA_LAST:
        return 256 + o - _KATA_FIRST
    return None


def id_to_char(i: int) -> str:
    if 32 <= i <= 255:
        return chr(i)
    if 256 <= i < SIZE:
        return chr(_KATA_FIRST + i - 256)
    return ""


def normalize(text: str) -> str:
    """NFKC (full-width Latin → ASCII, compatibility forms), then NFC so accents compose into Latin-1."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKC", text))


_NON_WORD = re.compile(r"[^\w'\s\u30a1-\u30fc]|_")


def spoken_words(text: str) -> list[str]:
    """The words the char head learns to spell: lower case, letters/digits/apostrophes (and katakana),
    punctuation as word breaks. The rule of the CTC targets and of the word LMs' lexicons alike."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFC", text).lower()).split()


def kana_words(text: str) -> list[tuple[str, str, str]]:
    """Japanese text → (word as written, its katakana pronunciation, part of speech) per word: how the
    head spells Japanese (SPEC §3.6). pyopenjtalk's frontend with `use_vanilla=True` (its default path
    needs sudachidict_core, not installable offline: DATA.md §1); pyopenjtalk is optional (installed by
    scripts/setup_data.sh), so this raises ImportError without it."""
    import pyopenjtalk

    out = []
    for node in pyopenjtalk.run_frontend(text, use_vanilla=True):
        surface = node.get("string", "")
        pron = (node.get("pron") or node.get("read") or surface).replace("’", "")  # ’ marks the accent
        out.append((surface, pron, node.get("pos", "")))
    return out


def kana_reading(text: str) -> str:
    """The katakana reading of Japanese text (`kana_words` joined)."""
    return "".join(pron for _, pron, _ in kana_words(text))


def encode(text: str) -> list[int]:
    """Text → label ids (1..347); characters the head cannot spell are dropped."""
    return [i for i in (char_to_id(c) for c in normalize(text)) if i is not None]


def decode(ids) -> str:
    return "".join(id_to_char(int(i)) for i in ids)
