"""A word n-gram language model for char-CTC beam search (`decoding/lexicon.py`).

The char head spells what it hears (`especifica ce losparametos`), so its greedy words are often
misspelt or run together; a lexicon-constrained beam search with a word LM turns the same posteriors into
words of the language (issue 4: WER on held-out voices and sentences; figures in recipes/RESULTS.md).

Scoring is stupid backoff (Brants et al. 2007, "Large language models in machine translation"): the
relative frequency of the longest seen n-gram, times 0.4 per order backed off. It is not a normalised
distribution, which a decoder that only compares hypotheses does not need, and it needs nothing but
counts, so a model is a small gzip text file that anyone can rebuild from their own sentences:

    #granite-asr-word-lm 1 <lang> <order>
    <count>\\t<w1> [w2 [w3]]        one line per kept n-gram, orders 1..order

Words are what the char head spells (`normalize_words`): lower case, letters, digits and apostrophes.
"""

from __future__ import annotations

import collections
import gzip
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import char_vocab

BOS, EOS = "<s>", "</s>"
BACKOFF = math.log(0.4)  # Brants et al. 2007
_HEADER = "#granite-asr-word-lm"


# The words of a sentence as the char head spells them: the CTC targets' rule, so lexicon and head agree.
normalize_words = char_vocab.spoken_words


@dataclass
class WordLM:
    """Counts of n-grams up to `order`; `counts[()]` holds the total number of (non-BOS) tokens."""

    lang: str
    order: int
    counts: dict[tuple[str, ...], int]

    @classmethod
    def train(cls, sentences: Iterable[str], lang: str, *, order: int = 3, min_count: int = 1) -> WordLM:
        """Count the n-grams of `sentences`; higher orders seen fewer than `min_count` times are dropped
        (unigrams are always kept: they are the lexicon)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        counts: collections.Counter[tuple[str, ...]] = collections.Counter()
        for s in sentences:
            words = [BOS, *normalize_words(s), EOS]
            if len(words) == 2:
                continue
            counts[(BOS,)] += 1  # the history count of a sentence's first word
            for i in range(1, len(words)):
                for n in range(1, min(order, i + 1) + 1):
                    counts[tuple(words[i - n + 1 : i + 1])] += 1
        kept = {k: c for k, c in counts.items() if len(k) == 1 or c >= min_count}
        kept[()] = sum(c for k, c in counts.items() if len(k) == 1 and k[0] != BOS)
        return cls(lang, order, kept)

    @property
    def words(self) -> list[str]:
        """The lexicon: every word seen, in a stable order (end-of-sentence and BOS left out)."""
        return sorted(k[0] for k in self.counts if len(k) == 1 and k[0] not in (BOS, EOS))

    def logprob(self, history: tuple[str, ...], word: str) -> float:
        """Stupid-backoff log score of `word` after `history` (any length; the last order-1 are used)."""
        history = history[len(history) - (self.order - 1) :] if self.order > 1 else ()
        penalty = 0.0
        while history:
            seen = self.counts.get((*history, word))
            if seen:
                return penalty + math.log(seen / self.counts[history])
            history, penalty = history[1:], penalty + BACKOFF
        unigram = self.counts.get((word,), 0)
        return penalty + math.log(max(unigram, 0.5) / self.counts[()])  # an unseen word: half a count

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{_HEADER} 1 {self.lang} {self.order}\n"]
        lines += [
            f"{self.counts[k]}\t{' '.join(k)}\n" for k in sorted(self.counts, key=lambda k: (len(k), k))
        ]
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
                if len(head) != 4 or head[0] != _HEADER or head[1] != "1":
                    raise ValueError("not a granite-asr word LM (bad header)")
                counts: dict[tuple[str, ...], int] = {}
                for line in f:
                    count, _, gram = line.rstrip("\n").partition("\t")
                    counts[tuple(gram.split())] = int(count)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: cannot read the word LM: {e}") from e
        if () not in counts:
            raise ValueError(f"{path}: the word LM has no token total")
        return cls(head[2], int(head[3]), counts)
