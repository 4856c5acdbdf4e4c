"""The exact prompts of each variant and task (SPEC §5.6, §8.1), and their tokenisation.

Every prompt holds exactly one `<|audio|>` placeholder; `expand_audio_tokens` repeats it to the projector's
token count (`FrameGeometry.audio_tokens_for_samples`, SPEC §5.4) before tokenising.

- 2b ("ar"):  `USER: <|audio|>{instruction}\\n ASSISTANT:` (no system turn, no space after the audio).
- 2b-plus:    Granite-4 role template with the fixed system turn, the generation prompt, and a leading
              space after `<|audio|>`; `prefix_text` continues the assistant turn (incremental decoding).
- 2b-nar:     no text prompt: the LLM input is the audio prefix followed by the edit slots (SPEC §6.2),
              so the prompt is the bare placeholder.

Instructions follow the IBM `granite_speech` library (`prompts.py`): a language tag when a language is
given, "transcribe the speech to text." for keyword biasing on 2b, and ` Keywords: kw1, kw2` appended
after the sentence's final punctuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

AUDIO_TOKEN = "<|audio|>"
TASKS = ("transcribe", "translate")

LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "pt": "Portuguese",
    "ja": "Japanese",
    "it": "Italian",
    "zh": "Mandarin",
}
_ALIASES = {
    **{code: code for code in LANGUAGE_NAMES},
    **{name.lower(): code for code, name in LANGUAGE_NAMES.items()},
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "deu": "de",
    "ger": "de",
    "spa": "es",
    "por": "pt",
    "jpn": "ja",
    "ita": "it",
    "zho": "zh",
    "chi": "zh",
    "chinese": "zh",
    "mandarin chinese": "zh",
}


@dataclass(frozen=True)
class VariantPrompts:
    """What a variant understands: its template, ASR languages, AST pairs and Plus-only modes."""

    template: str  # holds {content}; content = <|audio|> + separator + instruction
    audio_separator: str
    asr_languages: frozenset[str]
    translation_pairs: frozenset[tuple[str, str]] = frozenset()
    speakers_and_timestamps: bool = False
    keywords: bool = True
    prefix_text: bool = True


PLUS_SYSTEM = (
    "Knowledge Cutoff Date: April 2024.\n"
    "Today's Date: December 19, 2024.\n"
    "You are Granite, developed by IBM. You are a helpful AI assistant"
)
AR_TEMPLATE = "USER: {content}\n ASSISTANT:"
PLUS_TEMPLATE = (
    f"<|start_of_role|>system<|end_of_role|>{PLUS_SYSTEM}<|end_of_text|>\n"
    "<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n"
    "<|start_of_role|>assistant<|end_of_role|>"
)

AR_ASR_PUNCTUATED = "transcribe the speech with proper punctuation and capitalization."
AR_ASR_PUNCTUATED_LANG = "transcribe the {language} speech with proper punctuation and capitalization."
ASR_RAW = "can you transcribe the speech into a written format?"
ASR_RAW_LANG = "can you transcribe the {language} speech into a written format?"
AR_ASR_KEYWORDS = "transcribe the speech to text."
AST_RAW = "translate the speech to {target}."
AST_PUNCTUATED = "translate the speech to {target} with proper punctuation and capitalization."
PLUS_SPEAKERS = (
    "Speaker attribution: Transcribe and denote who is speaking by adding [Speaker 1]: "
    "and [Speaker 2]: tags before speaker turns."
)
PLUS_TIMESTAMPS = (
    "Timestamps: Transcribe the speech. After each word, add a timestamp tag showing "
    "the end time in centiseconds, e.g. hello [T:45] world [T:82]"
)

_EUROPEAN = frozenset({"en", "fr", "de", "es", "pt"})
VARIANTS: dict[str, VariantPrompts] = {
    "ar": VariantPrompts(
        template=AR_TEMPLATE,
        audio_separator="",
        asr_languages=_EUROPEAN | {"ja"},
        # SPEC §8.1: X→en from the ASR languages, en→fr/de/es/pt/ja/it/zh.
        translation_pairs=frozenset(
            {(src, "en") for src in ("fr", "de", "es", "pt", "ja")}
            | {("en", tgt) for tgt in ("fr", "de", "es", "pt", "ja", "it", "zh")}
        ),
    ),
    "plus": VariantPrompts(
        template=PLUS_TEMPLATE, audio_separator=" ", asr_languages=_EUROPEAN, speakers_and_timestamps=True
    ),
    "nar": VariantPrompts(
        template="{content}", audio_separator="", asr_languages=_EUROPEAN, keywords=False, prefix_text=False
    ),
}


def canonical_language(language: str | None) -> str | None:
    """ISO code for a code or English name ("French", "fr", "fra" → "fr"); ValueError if unknown."""
    if language is None:
        return None
    code = _ALIASES.get(language.strip().lower())
    if code is None:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(sorted(LANGUAGE_NAMES))}")
    return code


def _spec(variant: str) -> VariantPrompts:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}") from None


def _validate_translation(variant: str, spec: VariantPrompts, source, target) -> None:
    if not spec.translation_pairs:
        raise ValueError(f"variant {variant!r} cannot translate; only 'ar' (2b) does speech translation")
    if target is None:
        raise ValueError("task 'translate' needs target_language")
    targets = {t for _, t in spec.translation_pairs}
    if target not in targets:
        names = ", ".join(LANGUAGE_NAMES[t] for t in sorted(targets))
        raise ValueError(f"cannot translate into {LANGUAGE_NAMES[target]}; targets: {names}")
    if source is not None and (source, target) not in spec.translation_pairs:
        pairs = ", ".join(f"{s}->{t}" for s, t in sorted(spec.translation_pairs))
        raise ValueError(f"variant {variant!r} cannot translate {source}->{target}; supported: {pairs}")


def validate_task(
    variant: str,
    task: str = "transcribe",
    language: str | None = None,
    target_language: str | None = None,
    *,
    speakers: bool = False,
    timestamps: bool = False,
    keywords: Sequence[str] | None = None,
    prefix_text: str | None = None,
) -> None:
    """Raise ValueError for anything `variant` cannot do (SPEC §1, §7.3, §8.1)."""
    spec = _spec(variant)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    source, target = canonical_language(language), canonical_language(target_language)
    if task == "translate":
        _validate_translation(variant, spec, source, target)
    else:
        if target is not None:
            raise ValueError("target_language is only for task 'translate'")
        if source is not None and source not in spec.asr_languages:
            names = ", ".join(sorted(spec.asr_languages))
            raise ValueError(
                f"variant {variant!r} cannot transcribe {LANGUAGE_NAMES[source]}; languages: {names}"
            )
    if (speakers or timestamps) and not spec.speakers_and_timestamps:
        raise ValueError(f"speaker attribution and word timestamps need the 'plus' variant, not {variant!r}")
    if speakers and timestamps:
        raise ValueError("speaker attribution and word timestamps are separate tasks; ask for one at a time")
    if (speakers or timestamps) and task != "transcribe":
        raise ValueError("speaker attribution and word timestamps apply to task 'transcribe' only")
    if keywords and not spec.keywords:
        raise ValueError(f"variant {variant!r} has no keyword biasing")
    if prefix_text is not None and not spec.prefix_text:
        raise ValueError(f"variant {variant!r} takes no prefix_text")


def _instruction(variant, task, source, target, keyworded, punctuated, speakers, timestamps) -> str:
    if task == "translate":
        template = AST_PUNCTUATED if punctuated and not keyworded else AST_RAW
        return template.format(target=LANGUAGE_NAMES[target])
    if variant == "plus":
        if speakers:
            return PLUS_SPEAKERS
        if timestamps:
            return PLUS_TIMESTAMPS
        return ASR_RAW_LANG.format(language=LANGUAGE_NAMES[source]) if source else ASR_RAW
    if keyworded:
        return AR_ASR_KEYWORDS
    if not punctuated:
        return ASR_RAW
    return AR_ASR_PUNCTUATED_LANG.format(language=LANGUAGE_NAMES[source]) if source else AR_ASR_PUNCTUATED


def _with_keywords(instruction: str, keywords: Sequence[str]) -> str:
    cleaned = [" ".join(k.split()) for k in keywords]
    if any(not k for k in cleaned):
        raise ValueError("keywords must be non-empty strings")
    words = list(dict.fromkeys(cleaned))
    base = instruction.rstrip()
    sep = " " if base.endswith((".", "!", "?")) else ". "
    return f"{base}{sep}Keywords: {', '.join(words)}"


def build_prompt(
    variant: str,
    *,
    task: str = "transcribe",
    language: str | None = None,
    target_language: str | None = None,
    keywords: Sequence[str] | None = None,
    punctuated: bool = True,
    speakers: bool = False,
    timestamps: bool = False,
    prefix_text: str | None = None,
) -> str:
    """The full prompt text with a single `<|audio|>`. `punctuated` only matters on 2b."""
    if isinstance(keywords, str):
        keywords = [keywords]
    validate_task(
        variant,
        task,
        language,
        target_language,
        speakers=speakers,
        timestamps=timestamps,
        keywords=keywords,
        prefix_text=prefix_text,
    )
    spec = VARIANTS[variant]
    if variant == "nar":
        return AUDIO_TOKEN
    source, target = canonical_language(language), canonical_language(target_language)
    instruction = _instruction(
        variant, task, source, target, bool(keywords), punctuated, speakers, timestamps
    )
    if keywords:
        instruction = _with_keywords(instruction, keywords)
    prompt = spec.template.format(content=AUDIO_TOKEN + spec.audio_separator + instruction)
    return prompt + (prefix_text or "")


def expand_audio_tokens(prompt: str, n: int, audio_token: str = AUDIO_TOKEN) -> str:
    """Replace the single placeholder by `n` copies (SPEC §5.4)."""
    count = prompt.count(audio_token)
    if count != 1:
        raise ValueError(f"prompt must hold exactly one {audio_token}, found {count}")
    if n < 0:
        raise ValueError(f"audio token count must be >= 0, got {n}")
    return prompt.replace(audio_token, audio_token * n)


def encode_prompts(
    tokenizer, prompts: Sequence[str], audio_token_counts: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand, tokenise and LEFT-pad with the pad id → (input_ids (B, L) long, attention_mask (B, L) long)."""
    if len(prompts) != len(audio_token_counts):
        raise ValueError(f"{len(prompts)} prompts but {len(audio_token_counts)} audio token counts")
    audio_id, pad_id = tokenizer.audio_token_id, tokenizer.pad_id
    if audio_id is None or pad_id is None:
        raise ValueError("the tokenizer needs <|audio|> and a pad (or eos) token")
    rows = []
    for prompt, n in zip(prompts, audio_token_counts, strict=True):
        ids = tokenizer.encode(expand_audio_tokens(prompt, int(n)))
        if sum(1 for i in ids if i == audio_id) != int(n):
            raise ValueError(
                f"tokenised prompt does not hold {n} audio tokens; is <|audio|> a special token?"
            )
        rows.append(ids)
    width = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, ids in enumerate(rows):
        if ids:
            input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[b, width - len(ids) :] = 1
    return input_ids, attention_mask


_TIME_TAG_CHARS = frozenset("0123456789[]:T \t")


def time_tag_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens a 2b-plus `[T:N]` tag can be spelled with (SPEC §7.3): nothing but digits,
    brackets, `T`, `:` and spaces. The repetition guard looks through them in timestamp mode, where
    each copy of a loop carries its own time (`decoding.greedy.loop_cut`)."""
    out = []
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i], skip_special_tokens=True)
        if text and set(text) <= _TIME_TAG_CHARS:
            out.append(i)
    return out
