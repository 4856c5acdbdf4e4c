"""Text for the tokenizer and the decoder's language-model stage, and the BPE tokenizer trainer.

The held-out sentences of the speech corpus (same seed, same hash rule as `granite_asr.data.corpus`)
are excluded here too, so "unseen text" validation really is unseen by every stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..data import corpus
from ..prompts import LANGUAGE_NAMES

# The official special tokens (SPEC §5.5), so one prompt code serves our model and IBM's.
SPECIALS = ["<|end_of_text|>", "<|pad|>", "<|start_of_role|>", "<|end_of_role|>", "<|unk|>"]
AUDIO = "<|audio|>"


def training_text(langs: tuple[str, ...], seed: int, pairs_only: bool = False) -> list[str]:
    """Training sentences of every language, plus translation pairs written as `src\\nLanguage: tgt`;
    `pairs_only` keeps just the pairs, in the order they have among all the documents."""
    cfg = corpus.BuildConfig(out=Path("."), langs=langs, seed=seed)
    docs: list[tuple[str, bool]] = []  # (document, is a translation pair)
    for lang in langs:
        train, _held, trans = corpus.text_pools(cfg, lang)
        docs += [(str(s), False) for s in train]
        for src in map(str, train):
            for tgt_lang, tgt in trans.get(src, {}).items():
                docs.append((f"{src}\n{LANGUAGE_NAMES[tgt_lang]}: {tgt}", True))
    rng = np.random.default_rng(seed)
    shuffled = (docs[i] for i in rng.permutation(len(docs)))
    return [doc for doc, pair in shuffled if pair or not pairs_only]


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
