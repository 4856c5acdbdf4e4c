"""A word n-gram language model for char-CTC beam search (`decoding/lexicon.py`).

The char head spells what it hears (`especifica ce losparametos`), so its greedy words are often
misspelt or run together; a lexicon-constrained beam search with a word LM turns the same posteriors into
words of the language (issue 4: WER on held-out voices and sentences; figures in recipes/RESULTS.md).

Scoring is stupid backoff (Brants et al. 2007, "Large language models in machine translation"): the
relative frequency of the longest seen n-gram, times 0.4 per order backed off. It is not a normalised
distribution, which a decoder that only compares hypotheses does not need, and it needs nothing but
counts, so a model is a small gzip text file that anyone can rebuild from their own sentences:

    #granite-asr-word-lm 2 <lang> <order>
    <count>\\t<w1> [w2 [w3]]        one line per kept n-gram, orders 1..order
    =<count>\\t<word>                one line per general-vocabulary word (`with_vocabulary`)
    @<word>\\t<spelling> [...]       the head's spellings of a word written otherwise (`with_spellings`)

The sentences an LM is counted from are few (the bundled ones: 34-59 k per language, software messages,
fortunes, a handbook), so their words alone make a 15-44 k word lexicon, and a word outside it cannot be
written. `with_vocabulary` adds a general word list with frequencies (the bundled LMs: wordfreq's top
words) as unigram pseudo-counts kept apart from the sentence counts, so a general word can be spelt and
scored as a unigram without diluting the n-gram statistics (a bigram's history count stays the sentences').

Words are what the char head spells (`normalize_words`): lower case, letters, digits and apostrophes.
Japanese is the exception: the head spells its katakana reading (SPEC §3.6), so a Japanese LM counts
segmented words as they are written (kanji and kana, `train.word_lms.japanese_words`) and lists each
word's readings as its spellings: the search matches readings against the head and writes the words,
joined without spaces, so the char head's output becomes Japanese text.
"""

from __future__ import annotations

import collections
import gzip
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import char_vocab

BOS, EOS = "<s>", "</s>"
BACKOFF = math.log(0.4)  # Brants et al. 2007
_HEADER = "#granite-asr-word-lm"
UNSPACED = frozenset({"ja"})  # languages written without spaces between words


def _script(ch: str) -> str:
    """A character's script, by its Unicode name's first word: LATIN, GREEK, CJK, HIRAGANA, DIGIT, ..."""
    return unicodedata.name(ch, "?").split()[0]


# The words of a sentence as the char head spells them: the CTC targets' rule, so lexicon and head agree.
normalize_words = char_vocab.spoken_words


@dataclass
class WordLM:
    """Counts of n-grams up to `order`; `counts[()]` holds the total number of (non-BOS) tokens.
    `vocab`: general-vocabulary unigram pseudo-counts (`with_vocabulary`), scored with the sentences'
    unigrams over `counts[()]` + their total, never used as an n-gram history.
    `spellings`: word → what the char head writes for it, where that is not the word itself (Japanese)."""

    lang: str
    order: int
    counts: dict[tuple[str, ...], int]
    vocab: dict[str, int] = field(default_factory=dict)
    spellings: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        self._unigram_total = self.counts[()] + sum(self.vocab.values()) if () in self.counts else 0

    @classmethod
    def train(
        cls, sentences: Iterable[str | Sequence[str]], lang: str, *, order: int = 3, min_count: int = 1
    ) -> WordLM:
        """Count the n-grams of `sentences` (text, split by `normalize_words`, or lists of words already
        segmented); higher orders seen fewer than `min_count` times are dropped (unigrams are always kept:
        they are the lexicon)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        counts: collections.Counter[tuple[str, ...]] = collections.Counter()
        for s in sentences:
            words = [BOS, *(normalize_words(s) if isinstance(s, str) else s), EOS]
            if len(words) == 2:
                continue
            counts[(BOS,)] += 1  # the history count of a sentence's first word
            for i in range(1, len(words)):
                for n in range(1, min(order, i + 1) + 1):
                    counts[tuple(words[i - n + 1 : i + 1])] += 1
        kept = {k: c for k, c in counts.items() if len(k) == 1 or c >= min_count}
        kept[()] = sum(c for k, c in counts.items() if len(k) == 1 and k[0] != BOS)
        return cls(lang, order, kept)

    def with_vocabulary(
        self, frequencies: Mapping[str, float], weight: float = 1.0, *, min_script_share: float = 1e-3
    ) -> WordLM:
        """This LM plus a general word list: `frequencies` (word → relative frequency, any scale) are
        spread over `weight` × this LM's token count as pseudo-counts, at least 1 each so every listed
        word joins the lexicon. Words are normalised as the char head spells them; an entry that is not
        one such word (punctuation, several words), or that is written in a script the sentences hardly
        use (under `min_script_share` of their letters: the Greek letters and katakana of an English
        list), is skipped."""
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        letters: collections.Counter[str] = collections.Counter()
        for key, count in self.counts.items():
            if len(key) == 1 and key[0] not in (BOS, EOS):
                letters.update({_script(c): count for c in key[0]})
        scripts = {s for s, n in letters.items() if n >= min_script_share * sum(letters.values())}
        kept: dict[str, float] = {}
        for word, freq in frequencies.items():
            norm = normalize_words(word)
            if len(norm) == 1 and freq > 0 and all(_script(c) in scripts for c in norm[0]):
                kept[norm[0]] = kept.get(norm[0], 0.0) + freq
        total = sum(kept.values())
        scale = weight * self.counts[()] / total if total else 0.0
        vocab = dict(self.vocab)
        for word, freq in kept.items():
            vocab[word] = vocab.get(word, 0) + max(1, round(freq * scale))
        return replace(self, vocab=vocab)

    def with_spellings(self, spellings: Mapping[str, Iterable[str]]) -> WordLM:
        """This LM with more spellings per word (merged with its own, order kept, duplicates dropped)."""
        merged = dict(self.spellings)
        for word, more in spellings.items():
            merged[word] = tuple(dict.fromkeys((*merged.get(word, ()), *more)))
        return replace(self, spellings=merged)

    def spelling(self, word: str) -> tuple[str, ...]:
        """What the char head writes for `word`: its listed spellings, or the word itself."""
        return self.spellings.get(word) or (word,)

    @property
    def separator(self) -> str:
        return "" if self.lang in UNSPACED else " "

    @property
    def words(self) -> list[str]:
        """The lexicon: every word seen or listed, in a stable order (end-of-sentence and BOS left out)."""
        seen = {k[0] for k in self.counts if len(k) == 1 and k[0] not in (BOS, EOS)}
        return sorted(seen | self.vocab.keys())

    def logprob(self, history: tuple[str, ...], word: str) -> float:
        """Stupid-backoff log score of `word` after `history` (any length; the last order-1 are used)."""
        history = history[len(history) - (self.order - 1) :] if self.order > 1 else ()
        penalty = 0.0
        while history:
            seen = self.counts.get((*history, word))
            if seen:
                return penalty + math.log(seen / self.counts[history])
            history, penalty = history[1:], penalty + BACKOFF
        unigram = self.counts.get((word,), 0) + self.vocab.get(word, 0)
        return penalty + math.log(max(unigram, 0.5) / self._unigram_total)  # an unseen word: half a count

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{_HEADER} 2 {self.lang} {self.order}\n"]
        lines += [
            f"{self.counts[k]}\t{' '.join(k)}\n" for k in sorted(self.counts, key=lambda k: (len(k), k))
        ]
        lines += [f"={self.vocab[w]}\t{w}\n" for w in sorted(self.vocab)]
        lines += [f"@{w}\t{' '.join(self.spellings[w])}\n" for w in sorted(self.spellings)]
        # mtime 0 and no file name in the gzip header: the same counts give the same bytes
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
            f.write("".join(lines).encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> WordLM:
        path = Path(path)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                head = f.readline().split()
                if len(head) != 4 or head[0] != _HEADER or head[1] not in ("1", "2"):
                    raise ValueError("not a granite-asr word LM (bad header)")
                counts: dict[tuple[str, ...], int] = {}
                vocab: dict[str, int] = {}
                spellings: dict[str, tuple[str, ...]] = {}
                for line in f:
                    count, _, gram = line.rstrip("\n").partition("\t")
                    if count.startswith("@"):
                        spellings[count[1:]] = tuple(gram.split())
                    elif count.startswith("="):
                        vocab[gram] = int(count[1:])
                    else:
                        counts[tuple(gram.split())] = int(count)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: cannot read the word LM: {e}") from e
        if () not in counts:
            raise ValueError(f"{path}: the word LM has no token total")
        return cls(head[2], int(head[3]), counts, vocab, spellings)
