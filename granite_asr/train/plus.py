"""Plus-style training (issue 4 §3d): speaker turns and word end times as text the decoder writes.

The 2b-plus checkpoint differs from 2b only in its projector input (SPEC §7.1): the output of an early
encoder block is concatenated before the final one, and the decoder learned two more prompts (SPEC §5.6):
`[Speaker N]:` before each turn, and `word [T:N]` after each word, N = its end time in centiseconds modulo
1000, silence written as the word `_` (SPEC §7.3). IBM built that data by concatenating utterances of
different speakers and from forced alignments (SPEC §7.2); our conversation corpus
(`data.corpus build --conversations`) synthesises each word on its own, so every end time is exact.

- `plus_from_ar` turns an AR checkpoint into the Plus composition without changing what it computes: the
  Q-Former's cross-attention key/value weights get zero columns for the new (intermediate) half of their
  input, so training starts from the AR model's transcripts and learns what the early layer adds.
- `speaker_answer` / `timestamp_answer` write the targets; `transcribe.plus_tags` parses them back (the
  round trip is tested).
- `plus_examples` mixes the three Plus tasks on conversations with plain ASR on ordinary utterances.

Shapes: C encoder block width, C' = C·(len(cat_hidden_layers)+1) the projector's input width.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import VARIANTS
from ..model.build import build_model
from ..prompts import build_prompt
from .data import FeatureBatch
from .objectives import SpeechExample

PLUS_LANGS = ("en", "fr", "de", "es", "pt")  # SPEC §8.1: Plus has no Japanese
SILENCE_GAP = 0.15  # seconds of silence between words written as `_` (shorter gaps join the next word)
EARLY_LAYER_FRACTION = 3 / 16  # 2b-plus concatenates block 3 of 16 (SPEC §3.5)


def plus_config(ar_config):
    """The Plus composition of an AR config: block round(L·3/16) (≥ 1) concatenated, tied embeddings."""
    if ar_config.variant != "ar":
        raise ValueError(f"plus_config needs an 'ar' config, not {ar_config.variant!r} (one of {VARIANTS})")
    enc = ar_config.encoder
    layer = max(1, round(enc.num_layers * EARLY_LAYER_FRACTION))
    enc = dataclasses.replace(enc, cat_hidden_layers=(layer,), bpe_output_dim=0)
    proj = dataclasses.replace(ar_config.projector, encoder_hidden_size=enc.output_width)
    text = dataclasses.replace(ar_config.text, tie_word_embeddings=True)
    return ar_config.replace(variant="plus", encoder=enc, projector=proj, text=text)


@torch.no_grad()
def plus_from_ar(ar: torch.nn.Module) -> torch.nn.Module:
    """A Plus model that computes exactly what `ar` computes (the new input columns start at zero)."""
    model = build_model(plus_config(ar.config))
    own = model.state_dict()
    width = ar.config.encoder.hidden_dim  # the final block's width: the last slice of the Plus input
    state = {}
    for k, v in ar.state_dict().items():
        if k not in own:
            continue  # the BPE head (Plus has none, SPEC §9.2)
        if own[k].shape == v.shape:
            state[k] = v
        elif k.startswith("projector.") and k.endswith((".key.weight", ".value.weight")):
            w = torch.zeros_like(own[k])  # (H, C') with C' = [early block, final block]
            w[:, -width:] = v
            state[k] = w
        else:
            raise ValueError(f"{k}: shape {tuple(v.shape)} cannot map to {tuple(own[k].shape)}")
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"plus_from_ar: no source for {missing[:4]}")
    model.load_state_dict(state)
    model.tokenizer = getattr(ar, "tokenizer", None)
    return model


def _speaker_order(turns: list[dict]) -> dict[int, int]:
    order: dict[int, int] = {}
    for t in turns:
        order.setdefault(int(t["speaker"]), len(order) + 1)
    return order


def speaker_answer(turns: list[dict]) -> str:
    """`[Speaker 1]: text [Speaker 2]: text …`, speakers numbered by order of appearance (SPEC §7.3)."""
    order = _speaker_order(turns)
    return " ".join(f"[Speaker {order[int(t['speaker'])]}]: {t['text']}" for t in turns)


def _tag(seconds: float) -> str:
    return f"[T:{round(100 * seconds) % 1000}]"


def timestamp_answer(words: list[dict]) -> str:
    """`_ [T:30] and [T:57] so [T:95] …`: each word followed by its end time (cs mod 1000); a silence of
    at least `SILENCE_GAP` before a word becomes `_` tagged with the word's start (SPEC §7.3)."""
    out, prev_end = [], 0.0
    for w in words:
        if w["start"] - prev_end >= SILENCE_GAP:
            out.append(f"_ {_tag(w['start'])}")
        out.append(f"{w['word']} {_tag(w['end'])}")
        prev_end = w["end"]
    return " ".join(out)


def plus_examples(
    batch: FeatureBatch, rng, p_speakers: float = 0.4, p_timestamps: float = 0.4, p_no_language: float = 0.5
) -> list[SpeechExample]:
    """Conversations (rows with `words`/`turns`): speaker turns, word end times or the plain transcript;
    ordinary utterances: the plain transcript (language named or not, as `speech_examples` does)."""
    out = []
    for u in batch.items:
        if u.lang not in PLUS_LANGS:
            raise ValueError(f"{u.extra.get('id', u.index)}: Plus does not transcribe {u.lang!r} (SPEC §8.1)")
        r = rng.random()
        if "turns" in u.extra and r < p_speakers:
            out.append(SpeechExample(build_prompt("plus", speakers=True), speaker_answer(u.extra["turns"])))
        elif "words" in u.extra and r < p_speakers + p_timestamps:
            out.append(
                SpeechExample(build_prompt("plus", timestamps=True), timestamp_answer(u.extra["words"]))
            )
        else:
            language = None if rng.random() < p_no_language else u.lang
            out.append(SpeechExample(build_prompt("plus", language=language), u.text))
    return out
