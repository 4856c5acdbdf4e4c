"""Granite-4 byte-level BPE tokenizer: a thin wrapper over `tokenizers.Tokenizer` (SPEC §5.5).

`encode` never prepends BOS (the Granite GGUF has `add_bos_token=false`); added/special tokens such as
`<|audio|>` and `<|start_of_role|>` are matched inside the text, as the `tokenizers` library always does.
Only `tokenizer.json` is read; `tokenizer_config.json` is optional (special-token names, chat template)
and is written back unchanged by `save`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer

AUDIO_TOKEN = "<|audio|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"


def _token_name(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as a string or as `{"content": ...}`."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    def __init__(self, tokenizer: _HFTokenizer, config: dict[str, Any] | None = None):
        self._tok = tokenizer
        self.config: dict[str, Any] = dict(config or {})

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer | None:
        """The tokenizer in `path`, or None when there is no `tokenizer.json`."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            return None
        config: dict[str, Any] = {}
        if (path / "tokenizer_config.json").is_file():
            config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        return cls(_HFTokenizer.from_file(str(path / "tokenizer.json")), config)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": False,
            "eos_token": self.id_to_token(self.eos_id) if self.eos_id is not None else None,
            "pad_token": self.id_to_token(self.pad_id) if self.pad_id is not None else None,
            **self.config,
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ ids ⇄ text
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------------ special ids
    def _special(self, config_key: str, fallback: str) -> int | None:
        name = _token_name(self.config.get(config_key))
        found = self.token_to_id(name) if name else None
        return found if found is not None else self.token_to_id(fallback)

    @property
    def eos_id(self) -> int | None:
        return self._special("eos_token", EOS_TOKEN)

    @property
    def pad_id(self) -> int | None:
        pad = self._special("pad_token", PAD_TOKEN)
        return pad if pad is not None else self.eos_id

    @property
    def audio_token_id(self) -> int | None:
        return self.token_to_id(AUDIO_TOKEN)
