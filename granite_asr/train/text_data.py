"""Text for the tokenizer, the decoder's language-model stage and the word LMs; the BPE tokenizer trainer.

The held-out sentences of the speech corpus (same seed, same hash rule as `granite_asr.data.corpus`)
are excluded here too, so "unseen text" validation really is unseen by every stage.
"""

from __future__ import annotations

import collections
import heapq
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .. import char_vocab
from ..data import corpus
from ..decoding.word_lm import WordLM
from ..prompts import LANGUAGE_NAMES

# The official special tokens (SPEC §5.5), so one prompt code serves our model and IBM's.
SPECIALS = ["<|end_of_text|>", "<|pad|>", "<|start_of_role|>", "<|end_of_role|>", "<|unk|>"]
AUDIO = "<|audio|>"


def training_text(langs: tuple[str, ...], seed: int) -> list[str]:
    """Training sentences of every language, plus translation pairs written as `src\\nLanguage: tgt`."""
    cfg = corpus.BuildConfig(out=Path("."), langs=langs, seed=seed)
    docs: list[str] = []
    for lang in langs:
        train, _held, trans = corpus.text_pools(cfg, lang)
        docs += [str(s) for s in train]
        for src in map(str, train):
            for tgt_lang, tgt in trans.get(src, {}).items():
                docs.append(f"{src}\n{LANGUAGE_NAMES[tgt_lang]}: {tgt}")
    rng = np.random.default_rng(seed)
    return [docs[i] for i in rng.permutation(len(docs))]


def word_lm_sentences(lang: str, seed: int) -> list[str]:
    """One language's training sentences (the held-out ones excluded), for its word LM."""
    train, _held, _trans = corpus.text_pools(
        corpus.BuildConfig(out=Path("."), langs=(lang,), seed=seed), lang
    )
    return [str(s) for s in train]


def general_vocabulary(lang: str, size: int) -> dict[str, float]:
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
    return dict(heapq.nlargest(size, table.items(), key=lambda kv: (kv[1], kv[0])))


def japanese_words(sentence: str) -> list[tuple[str, str]]:
    """(word as written, its katakana reading as the char head spells it) for each word of a Japanese
    sentence: pyopenjtalk's frontend, as `data.text.to_kana` reads whole sentences for the CTC targets, so
    a word's reading here is the one the head was taught in that context. Punctuation, and words whose
    reading the head cannot spell, are left out (they end no word the search could match)."""
    import pyopenjtalk

    out = []
    for node in pyopenjtalk.run_frontend(sentence, use_vanilla=True):
        surface = char_vocab.normalize(node.get("string", "")).strip()
        pron = (node.get("pron") or node.get("read") or "").replace("’", "")
        reading = "".join(char_vocab.spoken_words(pron))
        if surface and node.get("pos") != "記号" and char_vocab.encode(reading):
            out.append((surface, reading))
    return out


def japanese_word_lm(
    sentences: list[str], general: dict[str, float], *, order: int, min_count: int, weight: float
):
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


def train_bpe(
    docs: list[str], vocab_size: int, specials: tuple[str, ...] | list[str] = SPECIALS
) -> Tokenizer:
    """A byte-level BPE (the `tokenizers` library) of `vocab_size` ids, `specials` first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def train_tokenizer(docs: list[str], vocab_size: int, out_dir: Path) -> Path:
    """Byte-level BPE of `vocab_size` ids (specials first), then `<|audio|>` appended as the last id,
    as in the official layout (SPEC §5.4: audio token = vocab_size − 1 of the LLM)."""
    tok = train_bpe(docs, vocab_size)
    tok.add_special_tokens([AUDIO])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tok.save(str(path))
    return path


def lm_batches(docs: list[str], tokenizer, max_tokens: int, max_len: int, seed: int):
    """Endless right-padded batches (ids (B, L), valid (B, L)) of ≈ max_tokens tokens, length-bucketed."""
    eos = tokenizer.eos_id
    encoded = [ids[: max_len - 1] + [eos] for ids in (tokenizer.encode(d) for d in docs) if ids]
    rng = np.random.default_rng(seed)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    batches, cur = [], []
    for i in order:
        if cur and (len(encoded[i]) * (len(cur) + 1) > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(encoded[i])
    batches.append(cur)
    while True:
        for b in rng.permutation(len(batches)):
            rows = batches[b]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, : len(r)] = torch.tensor(r)
            valid = torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]
            yield ids, valid
