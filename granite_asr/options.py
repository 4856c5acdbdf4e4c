"""Run-time options, defined once and shared by the single-file, batched, CLI, server and corpus paths.

`TranscribeOptions.validate(config)` rejects what a variant cannot do before any compute
(translation on NAR/Plus, Japanese on NAR/Plus, speakers/timestamps off Plus, …).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompts import validate_task

MODES = ("auto", "ar", "nar", "ctc", "speculative")


@dataclass(frozen=True)
class DecodeOptions:
    """How tokens are chosen (engine level)."""

    mode: str = "auto"  # auto → the best the variant supports: "ar" for ar/plus, "nar" for nar
    beam_size: int = 1
    max_new_tokens: int = 448
    batch_size: int | None = None  # None: engine picks from the audio length budget
    # Repetition guard (SPEC §10: runaway loops on short/silent chunks): stop a row whose last
    # `repeat_window` tokens repeat an n-gram more than `max_repeats` times.
    max_repeats: int = 8
    repeat_window: int = 64
    length_penalty: float = 1.0
    # Self-speculative decoding thresholds (SPEC §5.8; leaderboard values).
    confidence_threshold: float = 0.4
    ctc_threshold: float = 0.0
    # Char-CTC transcription (mode "ctc" on a char head): "auto" searches with the bundled per-language
    # lexicon + word LM (`decoding/lexicon.py`; the language given, or guessed from the greedy words),
    # "none" keeps the greedy spelling, a directory uses its `<lang>.tsv.gz` word LMs instead.
    word_lm: str = "auto"
    # Char-CTC transcription of fast speech: a clip whose char head emits a label on more than
    # `ctc_saturation` of its encoder frames (collapsed greedy labels / frames) has run out of frames for
    # its letters (a 25 Hz head, as the embedded model's, meets ~20 chars/s of fast speech), so it is
    # encoded again with its log-mel stretched `ctc_tempo` times longer; 1.0 turns this off. Chosen on
    # one validation split, then measured on four others (recipes/RESULTS.md, session 25).
    ctc_tempo: float = 1.2
    ctc_saturation: float = 0.6

    def resolved_mode(self, variant: str, preferred: str | None = None) -> str:
        """`auto` → `preferred` (a checkpoint's `SpeechConfig.auto_mode`) or the variant's own."""
        if self.mode == "auto":
            return preferred or ("nar" if variant == "nar" else "ar")
        return self.mode


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything `model.transcribe(...)` accepts, for every path."""

    task: str = "transcribe"  # or "translate"
    language: str | None = None
    target_language: str | None = None  # translate: default English
    keywords: tuple[str, ...] = ()
    punctuated: bool = True
    word_timestamps: bool = False
    speakers: bool = False
    # Plus only: the model writes `word [T:N]` end times (SPEC §7.3) and they time the words, instead of
    # char-CTC alignment (the default on every variant). Not combinable with `speakers` (one prompt each).
    model_timestamps: bool = False
    decode: DecodeOptions = dataclasses.field(default_factory=DecodeOptions)
    # Long-form: windows of at most `chunk_seconds`, cut at VAD pauses (or CTC blank runs).
    chunk_seconds: float = 30.0
    vad: bool = True
    progress: bool = True

    def replace(self, **changes: Any) -> TranscribeOptions:
        return dataclasses.replace(self, **changes)

    def resolved_mode(self, variant: str, preferred: str | None = None) -> str:
        """The mode that runs: a checkpoint's preferred `auto` mode applies to plain transcription only;
        translation, speakers and model timestamps need a prompt, so they take the variant's own mode.
        Keywords need a prompt too, except in a preferred char-CTC mode with its word-LM search, which
        biases towards them itself (`decoding/lexicon.py`: the embedded model's decoder is weaker)."""
        plain = self.task == "transcribe" and not (self.speakers or self.model_timestamps)
        searched = preferred == "ctc" and self.decode.word_lm != "none"
        plain = plain and (not self.keywords or searched)
        return self.decode.resolved_mode(variant, preferred if plain else None)

    def validate(self, variant: str, preferred: str | None = None) -> None:
        """Raise ValueError for anything the variant cannot do (before any compute)."""
        if self.decode.mode not in MODES:
            raise ValueError(f"unknown mode {self.decode.mode!r}; choose from {MODES}")
        if self.decode.beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if not 1.0 <= self.decode.ctc_tempo <= 4.0:
            raise ValueError(f"ctc_tempo must be between 1 and 4, got {self.decode.ctc_tempo}")
        if not 0.0 < self.decode.ctc_saturation <= 1.0:
            raise ValueError(f"ctc_saturation must be in (0, 1], got {self.decode.ctc_saturation}")
        if self.decode.word_lm not in ("auto", "none") and not Path(self.decode.word_lm).is_dir():
            raise ValueError(f"word_lm: {self.decode.word_lm!r} is not 'auto', 'none' or a directory")
        mode = self.resolved_mode(variant, preferred)
        if mode == "nar" and variant != "nar":
            raise ValueError(f"mode 'nar' needs a 2b-nar model, not {variant!r}")
        if mode == "ar" and variant == "nar":
            raise ValueError("mode 'ar' needs an autoregressive model (2b or 2b-plus)")
        if mode in ("nar", "ctc") and self.task == "translate":
            raise ValueError(f"mode {mode!r} cannot translate; use mode 'ar' with a 2b model")
        validate_task(
            variant,
            self.task,
            self.language,
            self.target_language or ("en" if self.task == "translate" else None),
            speakers=self.speakers,
            timestamps=self.model_timestamps,  # otherwise words are timed by CTC alignment
            keywords=list(self.keywords) or None,
            prefix_text=None,
        )
