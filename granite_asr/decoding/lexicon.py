"""Char-CTC beam search constrained to a lexicon and scored with a word LM (flashlight-text's decoder).

The greedy char transcript spells sounds; this search keeps only hypotheses made of words of the
language's lexicon and adds `lm_weight` × the word LM's score and `word_score` per word (the
wav2letter/flashlight lexicon decoder, as torchaudio's `ctc_decoder` uses it). The LM is our own
`WordLM`, called back from the C++ search at each word end. A word is matched by its spellings (the
word itself, or for Japanese its katakana readings) and written as the word, so Japanese comes out in
kanji; keywords join the lexicon with an LM bonus (`keyword_entries`). Shapes: log-probs (T, V) per
clip, V = `char_vocab.SIZE`, blank 0, the space (id 32) is the word separator ("silence").

`WordLMs` loads the per-language models of a directory (`<lang>.tsv.gz`; the bundled one is
`granite_asr/assets/wordlm`), and guesses a clip's language from its greedy words when none is given.
"""

from __future__ import annotations

import collections
import functools
import math
import string
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import char_vocab
from .word_lm import BOS, EOS, WordLM, normalize_words

SPACE = char_vocab.char_to_id(" ")
BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "wordlm"
_MEMO_LIMIT = 1_000_000  # memoised LM scores per language (~150 MB at most)
_KEYWORD_DECODERS = 8  # keyword-biased decoders kept (least recently used dropped)
_TRIE_LABELS = 6  # flashlight's kTrieMaxLabel: words per trie node (more are dropped with a warning)


@dataclass(frozen=True)
class LexiconOptions:
    """Search settings; the weights were chosen on held-out sentences spoken by training voices
    (`val-unseen-text`), then measured on held-out voices and sentences (recipes/RESULTS.md)."""

    beam_size: int = 32
    beam_size_token: int = 16
    beam_threshold: float = 25.0
    lm_weight: float = 0.7
    word_score: float = 0.5
    sil_score: float = 0.0
    keyword_score: float = 6.0  # added to a keyword's LM score (nats, before lm_weight; RESULTS.md)


@functools.cache
def available() -> bool:
    """Whether flashlight-text is installed and the bundled word LMs are present (warns once if not)."""
    try:
        _flashlight()
    except RuntimeError as e:
        warnings.warn(f"{e}; char-CTC transcripts keep their greedy spelling", stacklevel=2)
        return False
    return any(BUNDLED.glob("*.tsv.gz"))


def _flashlight():
    try:
        from flashlight.lib.text import decoder
    except ImportError as e:  # a platform without a flashlight-text wheel
        raise RuntimeError("the word-LM decoder needs flashlight-text: pip install flashlight-text") from e
    return decoder


def _lm_adapter(lm: WordLM, words: list[str], bonus: list[float]):
    """A flashlight `LM` whose states carry the last order−1 words; scores memoised per (history, word).
    `words[i]` is what the LM knows lexicon entry i as, `bonus[i]` what it adds (keywords)."""
    fl = _flashlight()

    class Adapter(fl.LM):
        def __init__(self):
            fl.LM.__init__(self)
            self.history: dict = {}
            self.memo: dict[tuple, float] = {}

        def _step(self, state, index: int, word: str):
            h = self.history[state]
            child = state.child(index)
            self.history.setdefault(child, (*h, word)[-(lm.order - 1) :] if lm.order > 1 else ())
            key = (h, word)
            if key not in self.memo:
                if len(self.memo) >= _MEMO_LIMIT:  # a long-running server: keep memory bounded
                    self.memo.clear()
                self.memo[key] = lm.logprob(h, word)
            return child, self.memo[key]

        def start(self, start_with_nothing):
            self.history.clear()  # states of the previous clip are no longer referenced
            state = fl.LMState()
            self.history[state] = (BOS,)
            return state

        def score(self, state, index):
            child, score = self._step(state, index, words[index])
            return child, score + bonus[index]

        def finish(self, state):
            return self._step(state, len(words), EOS)

    return Adapter()


def keyword_entries(
    keywords: Sequence[str], bonus: float, *, unspaced: bool = False
) -> list[tuple[str, str, float, tuple[str, ...]]]:
    """Lexicon entries for keyword biasing: each word of each keyword, written as given (case kept,
    edge punctuation dropped), scored as the LM's word plus `bonus`. A keyword is thus always in the
    lexicon, and preferred where the audio allows it: the search's form of the prompt's `Keywords:` list
    (SPEC §5.6) for the char head. In a language written without spaces (Japanese) each keyword is one
    word, spelt by its reading: kana as written, kanji read by pyopenjtalk where it is installed
    (`scripts/setup_data.sh`; otherwise the keyword is skipped with a warning)."""
    out = []
    for phrase in keywords:
        for token in [phrase] if unspaced else phrase.split():
            written = token.strip(string.punctuation + "«»¿¡“”「」、。 ")
            spoken = _reading(written) if unspaced else normalize_words(token)
            if spoken and len(spoken) == 1 and written:
                out.append((written, written if unspaced else spoken[0], bonus, (spoken[0],)))
    return out


def _reading(text: str) -> list[str] | None:
    """A Japanese keyword's katakana reading as one word, or None (and a warning) without pyopenjtalk."""
    if all(char_vocab.char_to_id(c) is not None for c in text):  # kana (or Latin) already spell it
        return ["".join(normalize_words(text))]
    try:
        return ["".join(normalize_words(char_vocab.kana_reading(text)))]
    except ImportError:
        warnings.warn(f"keyword {text!r}: reading kanji needs pyopenjtalk; skipped", stacklevel=3)
        return None


class LexiconDecoder:
    """One language's lexicon + LM search, optionally biased towards keywords. Thread-safe (one search
    at a time per decoder)."""

    def __init__(self, lm: WordLM, options: LexiconOptions | None = None, keywords: Sequence[str] = ()):
        fl = _flashlight()
        self.lm, self.options = lm, options or LexiconOptions()
        # Entries: (written form, the LM's word, LM bonus, spellings), each spelling as head labels once;
        # two spellings that fold to the same labels count once. A word the head cannot spell (no letter
        # of its alphabet) can never be matched: left out.
        entries = [(w, w, 0.0, lm.spelling(w)) for w in lm.words]
        entries += keyword_entries(keywords, self.options.keyword_score, unspaced=lm.separator == "")
        labelled = [(e, {tuple(char_vocab.encode(sp)) for sp in e[3]} - {()}) for e in entries]
        labelled = [(e, labels) for e, labels in labelled if labels]
        self.words = [e[0] for e, _ in labelled]
        self._bonus = [e[2] for e, _ in labelled]
        self.keywords = tuple(keywords)
        # kept alive here: the C++ decoder only borrows it
        self._adapter = _lm_adapter(lm, [e[1] for e, _ in labelled], self._bonus)
        trie = fl.Trie(char_vocab.SIZE, SPACE)
        start = self._adapter.start(False)
        homophones: dict[tuple[int, ...], list[tuple[float, int]]] = collections.defaultdict(list)
        for i, (_, labels) in enumerate(labelled):
            _, score = self._adapter.score(start, i)
            for ids in labels:
                homophones[ids].append((score, i))
        for spelling, found in homophones.items():
            # a trie node holds at most _TRIE_LABELS words: keep a spelling's likeliest (Japanese homophones)
            for score, i in sorted(found, key=lambda f: (-f[0], f[1]))[:_TRIE_LABELS]:
                trie.insert(list(spelling), i, score)
        trie.smear(fl.SmearingMode.MAX)  # a prefix's score is its best completion's (look-ahead)
        o = self.options
        self._decoder = fl.LexiconDecoder(
            fl.LexiconDecoderOptions(
                beam_size=o.beam_size, beam_size_token=o.beam_size_token, beam_threshold=o.beam_threshold,
                lm_weight=o.lm_weight, word_score=o.word_score, unk_score=float("-inf"),
                sil_score=o.sil_score, log_add=False, criterion_type=fl.CriterionType.CTC,
            ),
            trie, self._adapter, SPACE, char_vocab.BLANK, -1, [], False,
        )  # fmt: skip
        self._lock = threading.Lock()

    def search(self, logprobs: torch.Tensor) -> tuple[str, float]:
        """(T, V) char-CTC log-probabilities of one clip → (its words space-separated, the search score:
        acoustic + weighted LM + word scores, comparable between languages' decoders of one clip; the
        keyword bonus is left out of it, so keywords found in two languages do not choose between them)."""
        if logprobs.dim() != 2 or logprobs.shape[1] != char_vocab.SIZE:
            raise ValueError(f"logprobs must be (T, {char_vocab.SIZE}), got {tuple(logprobs.shape)}")
        if logprobs.shape[0] == 0:
            return "", 0.0
        emissions = logprobs.detach().float().cpu().contiguous()
        with self._lock:
            hyps = self._decoder.decode(emissions.data_ptr(), emissions.shape[0], emissions.shape[1])
        if not hyps:
            return "", float("-inf")
        found = [i for i in hyps[0].words if i >= 0]
        bonus = self.options.lm_weight * sum(self._bonus[i] for i in found)
        return self.lm.separator.join(self.words[i] for i in found), float(hyps[0].score) - bonus

    def decode(self, logprobs: torch.Tensor) -> str:
        return self.search(logprobs)[0]


class WordLMs:
    """The word LMs of a directory (`<lang>.tsv.gz`), loaded on first use."""

    def __init__(self, directory: str | Path = BUNDLED, options: LexiconOptions | None = None):
        self.directory, self.options = Path(directory), options
        if not self.directory.is_dir():
            raise ValueError(f"{self.directory}: no such word-LM directory")
        self.languages = tuple(sorted(p.name.split(".")[0] for p in self.directory.glob("*.tsv.gz")))
        # one decoder per language and keyword list; the keyword ones (a trie each, built in ~1-2 s)
        # for the last few lists, so a server answering requests with varying keywords stays bounded
        self._decoders: collections.OrderedDict[tuple, LexiconDecoder] = collections.OrderedDict()
        self._lock = threading.Lock()

    def decoder(self, lang: str, keywords: Sequence[str] = ()) -> LexiconDecoder | None:
        if lang not in self.languages:
            return None
        key = (lang, tuple(keywords))
        with self._lock:
            if key not in self._decoders:
                self._decoders[key] = LexiconDecoder(self.models[lang], self.options, keywords)
                biased = [k for k in self._decoders if k[1]]
                if len(biased) > _KEYWORD_DECODERS:
                    del self._decoders[biased[0]]
            self._decoders.move_to_end(key)
            return self._decoders[key]

    @functools.cached_property
    def models(self) -> dict[str, WordLM]:
        return {lang: WordLM.load(self.directory / f"{lang}.tsv.gz") for lang in self.languages}

    @functools.cached_property
    def char_profiles(self) -> dict[str, tuple[dict[str, float], float]]:
        """Per language: log-frequency of each char trigram of its words as the head spells them
        (word-frequency weighted, spaces marking word edges) and the log-frequency of an unseen one. A
        language written without spaces (Japanese) also gets the trigrams across each seen word pair, as
        the head runs its words together."""
        profiles = {}
        for lang, lm in self.models.items():
            grams: collections.Counter[str] = collections.Counter()
            for key, count in lm.counts.items():
                if BOS in key or EOS in key or not 1 <= len(key) <= (2 if lm.separator == "" else 1):
                    continue
                text = lm.separator.join(lm.spelling(w)[0] for w in key)
                padded = f" {text} " if len(key) == 1 else text
                grams.update({padded[i : i + 3]: count for i in range(len(padded) - 2)})
            total = sum(grams.values())
            profiles[lang] = ({g: math.log(c / total) for g, c in grams.items()}, math.log(0.1 / total))
        return profiles

    @functools.cached_property
    def scripts(self) -> dict[str, frozenset[str]]:
        """Per language: the characters only its words are spelt with (katakana: Japanese's alone)."""
        alphabets = {
            lang: frozenset("".join(s for w in lm.words for s in lm.spelling(w)))
            for lang, lm in self.models.items()
        }
        return {
            lang: alphabet.difference(*(other for o, other in alphabets.items() if o != lang))
            for lang, alphabet in alphabets.items()
        }

    def language_candidates(
        self, greedy_text: str, *, margin: float = 0.6, min_seen: float = 0.5, script_share: float = 0.9
    ) -> list[str]:
        """Languages whose char trigrams best explain the greedy transcript: the best, plus the runner-up
        when it is within `margin` nats per trigram (then the search decides), or none when even the best
        has seen fewer than `min_seen` of the trigrams (a language without a word LM, no words). Char
        trigrams survive the head's misspellings where whole words do not. A transcript written (at least
        `script_share` of its characters) in a script only one language uses is that language's, whatever
        its trigrams: the head writes katakana for Japanese alone (SPEC §3.6)."""
        letters = [c for c in greedy_text if not c.isspace()]
        for lang, script in sorted(self.scripts.items()):
            if letters and sum(c in script for c in letters) >= script_share * len(letters):
                return [lang]
        words = (f" {w} " for w in normalize_words(greedy_text))
        grams = [w[i : i + 3] for w in words for i in range(len(w) - 2)]
        if not grams or not self.languages:
            return []
        profiles = self.char_profiles
        mean = {
            lang: sum(table.get(g, unseen) for g in grams) / len(grams)
            for lang, (table, unseen) in profiles.items()
        }
        ranked = sorted(sorted(mean), key=mean.__getitem__, reverse=True)
        if sum(g in profiles[ranked[0]][0] for g in grams) < min_seen * len(grams):
            return []
        return ranked[:2] if len(ranked) > 1 and mean[ranked[0]] - mean[ranked[1]] < margin else ranked[:1]

    def guess_language(self, greedy_text: str) -> str | None:
        """The trigram guess alone (`language_candidates`' first), or None."""
        return next(iter(self.language_candidates(greedy_text)), None)

    def decode(
        self, logprobs: torch.Tensor, greedy_text: str, language: str | None, keywords: Sequence[str] = ()
    ) -> str | None:
        """The clip's words under its language's LM, or None when no LM applies (a language without
        one, silence). Without `language`, a close call between the two likeliest
        languages by char trigrams goes to the higher search score: guesses right on 195 (was 190) of
        200 held-out sentences and 158 (155) of 200 held-out voices (recipes/RESULTS.md). `keywords` bias
        the search towards them (`keyword_entries`)."""
        if not greedy_text.strip():
            return None
        if language is not None:
            decoder = self.decoder(language, keywords)
            return decoder.decode(logprobs) if decoder is not None else None
        candidates = self.language_candidates(greedy_text)
        found = [self.decoder(lang, keywords).search(logprobs) for lang in candidates]
        return max(found, key=lambda f: f[1])[0] if found else None


@functools.lru_cache(maxsize=4)
def word_lms(directory: str = str(BUNDLED)) -> WordLMs:
    """Shared per directory, so every engine reuses the loaded lexicons."""
    return WordLMs(directory)
