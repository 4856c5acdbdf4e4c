"""A tiny byte-level BPE with the Granite special tokens, trained in memory for tests (SPEC §5.5)."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer as HFTokenizer

from granite_asr.tokenizer import Tokenizer
from granite_asr.train.text_data import train_bpe

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
    return train_bpe(_CORPUS * 4, 400, SPECIAL_TOKENS).to_str()


def make_tokenizer() -> Tokenizer:
    """A fresh `granite_asr.tokenizer.Tokenizer` (ids: end_of_text 0, pad 1, …, audio 4)."""
    return Tokenizer(HFTokenizer.from_str(_trained_json()))
