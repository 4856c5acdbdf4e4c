"""A tiny byte-level BPE with the Granite special tokens, trained in memory for tests (SPEC §5.5)."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from granite_asr.tokenizer import Tokenizer

SPECIAL_TOKENS = ("<|end_of_text|>", "<|pad|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>")

_CORPUS = [
    "transcribe the speech with proper punctuation and capitalization.",
    "can you transcribe the speech into a written format?",
    "translate the speech to French with proper punctuation and capitalization.",
    "USER: ASSISTANT: system user assistant Keywords: Granite, IBM",
    "And so, my fellow Americans, ask not what your country can do for you.",
    "Speaker attribution: Transcribe and denote who is speaking. Timestamps: hello [T:45] world [T:82]",
]


@lru_cache(maxsize=1)
def _trained_json() -> str:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def make_tokenizer() -> Tokenizer:
    """A fresh `granite_asr.tokenizer.Tokenizer` (ids: end_of_text 0, pad 1, …, audio 4)."""
    return Tokenizer(HFTokenizer.from_str(_trained_json()))
