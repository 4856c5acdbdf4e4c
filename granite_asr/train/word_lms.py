"""The char-CTC search's word LMs (`decoding/word_lm.py`), built for the `wordlm` stage (issue 4).

    python -m granite_asr.train wordlm --out granite_asr/assets/wordlm --general-words 50000

Sentences: the corpus builder's offline text minus its held-out sentences (or the user's own, `--text`).
General words: wordfreq's most frequent words, so the lexicon covers everyday speech. Japanese: words
segmented and read by pyopenjtalk, written as in text and spelt by their readings.
"""

from __future__ import annotations

import collections
import heapq
import shutil
import subprocess
from pathlib import Path

from .. import char_vocab
from ..data import corpus
from ..decoding.word_lm import WordLM


def word_lm_sentences(lang: str, seed: int) -> list[str]:
    """One language's training sentences (the held-out ones excluded), for its word LM."""
    train, _held, _trans = corpus.text_pools(
        corpus.BuildConfig(out=Path("."), langs=(lang,), seed=seed), lang
    )
    return [str(s) for s in train]


# hunspell dictionaries (Debian hunspell-en-us/-en-gb/-fr/-de-de/-es/-pt-br/-pt-pt): a word passes if any accepts it
HUNSPELL = {
    "en": ("en_US", "en_GB"),
    "fr": ("fr_FR",),
    "de": ("de_DE",),
    "es": ("es_ES",),
    "pt": ("pt_BR", "pt_PT"),
}
HUNSPELL_DIR = Path("/usr/share/hunspell")


def spelled(words: list[str], lang: str) -> set[str]:
    """The words a hunspell dictionary of `lang` accepts as written or capitalised (German nouns, names:
    the lexicon is lower case). wordfreq's web text carries misspellings and accent-less forms ("dont",
    "etre", "tambien", "nao") that would compete in the lexicon with the right spelling of what the char
    head hears; this drops them. Languages without a dictionary keep every word."""
    if lang not in HUNSPELL:
        return set(words)
    dicts = [d for d in HUNSPELL[lang] if (HUNSPELL_DIR / f"{d}.dic").exists()]
    if not dicts or not shutil.which("hunspell"):
        raise SystemExit(f"--spell-check needs hunspell and a {lang} dictionary: bash scripts/setup_data.sh")
    cap = {w: w[:1].upper() + w[1:] for w in words}
    text = "\n".join([*words, *cap.values()]) + "\n"
    ok: set[str] = set()
    for d in dicts:
        cmd = ["hunspell", "-i", "utf-8", "-d", str(HUNSPELL_DIR / d), "-G"]
        ok.update(
            subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout.split("\n")
        )
    return {w for w in words if w in ok or cap[w] in ok}


def general_vocabulary(lang: str, size: int, spell_check: bool = False) -> dict[str, float]:
    """The `size` most frequent words of `lang` with their frequencies, from wordfreq (Speer 2022: Wikipedia,
    subtitles, news, books, web text; data CC BY-SA 4.0), installed with the `train` extra. The word LMs'
    own sentences are software messages, fortunes and a handbook: a lexicon of their words alone misses
    most of everyday speech (recipes/RESULTS.md, session 8)."""
    try:
        import wordfreq
    except ImportError as e:
        raise SystemExit("--general-words needs wordfreq: pip install 'granite-asr[train]'") from e
    # the stored frequency table, not word_frequency(): that re-tokenises each word (MeCab for Japanese);
    # wordfreq folds every digit to 0 ("0000" stands for all 4-digit numbers): no number is a word here
    table = {w: f for w, f in wordfreq.get_frequency_dict(lang).items() if not any(c.isdigit() for c in w)}
    top = heapq.nlargest(size * (2 if spell_check else 1), table.items(), key=lambda kv: (kv[1], kv[0]))
    if spell_check:
        good = spelled([w for w, _ in top], lang)
        top = [(w, f) for w, f in top if w in good][:size]
    return dict(top)


def japanese_words(sentence: str) -> list[tuple[str, str]]:
    """(word as written, its reading as the char head spells it) for each word of a Japanese sentence:
    `char_vocab.kana_words`, which also reads whole sentences for the CTC targets, so a word's reading
    here is the one the head was taught in that context. Punctuation, and words whose reading the head
    cannot spell, are left out (they end no word the search could match)."""
    out = []
    for surface, pron, pos in char_vocab.kana_words(sentence):
        surface, reading = char_vocab.normalize(surface).strip(), "".join(char_vocab.spoken_words(pron))
        if surface and pos != "記号" and char_vocab.encode(reading):
            out.append((surface, reading))
    return out


def japanese_word_lm(
    sentences: list[str], general: dict[str, float], *, order: int, min_count: int, weight: float
) -> WordLM:
    """A Japanese word LM whose words are written as in text and spelt by their readings (`japanese_words`;
    `decoding/word_lm.py`). General words get the reading of the word alone."""
    segmented = [japanese_words(s) for s in sentences]
    lm = WordLM.train([[w for w, _ in seg] for seg in segmented], "ja", order=order, min_count=min_count)
    readings: dict[str, list[str]] = {}
    for seg in segmented:
        for word, reading in seg:
            readings.setdefault(word, []).append(reading)
    if general:
        lm = lm.with_vocabulary(general, weight)
        for word in lm.vocab.keys() - readings.keys():
            parts = japanese_words(word)
            if parts:
                readings[word] = ["".join(r for _, r in parts)]
    # each word's readings, the most frequent first
    ranked = {w: [r for r, _ in collections.Counter(rs).most_common()] for w, rs in readings.items()}
    return lm.with_spellings(ranked)


def build(
    lang: str,
    sentences: list[str],
    *,
    order: int,
    min_count: int,
    general_words: int,
    general_weight: float,
    spell_check: bool = False,
) -> WordLM:
    """One language's word LM from `sentences`, plus `general_words` of wordfreq's when > 0 (only those
    hunspell accepts, with `spell_check`)."""
    general = general_vocabulary(lang, general_words, spell_check) if general_words else {}
    if lang == "ja":
        return japanese_word_lm(sentences, general, order=order, min_count=min_count, weight=general_weight)
    lm = WordLM.train(sentences, lang, order=order, min_count=min_count)
    return lm.with_vocabulary(general, general_weight) if general else lm
