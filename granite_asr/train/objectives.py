"""Training objectives of each recipe stage (issue 4 §3), as `loss(model, batch) -> {"loss": …, …}`.

Legend: B batch, T encoder frames, K BPE frames, L token positions, V vocabulary.

- encoder (a): char CTC on the last block (`encoder.out`) + char CTC at the self-conditioning layer
  (the mid-layer logits that feed back, SPEC §3.4) + BPE CTC on the posterior-pooled frames (SPEC §3.6).
- lm: next-token prediction on text (the small decoder learns language before speech; NOTES).
- speech (b): the AR model on ASR / AST prompts; loss on the answer tokens only.
- nar (c): CTC over the edit slots against the reference tokens (SPEC §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .. import char_vocab
from ..model.speech_lm import positions_from_mask
from ..prompts import build_prompt, expand_audio_tokens
from .data import FeatureBatch

IGNORE = -100


@lru_cache(maxsize=200_000)
def char_targets(text: str, lang: str) -> tuple[int, ...]:
    """What the char head learns to spell: lower case, letters/digits/apostrophes, single spaces;
    Japanese as its katakana reading (the head has katakana only, SPEC §3.6)."""
    if lang == "ja":
        from ..data.text import to_kana

        text = to_kana(text)
    return tuple(char_vocab.encode(" ".join(char_vocab.spoken_words(text))))


def _ctc(logits: torch.Tensor, lengths: torch.Tensor, targets: list, blank: int) -> torch.Tensor:
    """Mean CTC over the batch; logits (B, T, V); unusable rows (target longer than input) are skipped."""
    logp = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    tl = torch.tensor([len(t) for t in targets], device=logits.device)
    flat = torch.tensor([x for t in targets for x in t], dtype=torch.long, device=logits.device)
    loss = F.ctc_loss(logp, flat, lengths, tl, blank=blank, reduction="none", zero_infinity=True)
    ok = tl > 0
    return (loss[ok] / tl[ok].clamp_min(1)).mean() if ok.any() else loss.sum() * 0


@dataclass(frozen=True)
class EncoderWeights:
    char_final: float = 1.0
    char_mid: float = 0.3
    bpe: float = 0.5


def encoder_loss(
    model: nn.Module, batch: FeatureBatch, tokenizer, w: EncoderWeights = EncoderWeights(), enc=None
) -> dict:
    """`enc`: the batch's `EncoderOutput` when the caller already ran the encoder (joint stage)."""
    enc = model.encoder(batch.features, batch.lengths) if enc is None else enc
    chars = [char_targets(u.text, u.lang) for u in batch.items]
    out = {
        "char": _ctc(
            model.encoder.char_logits(enc, final=True),
            model.encoder.char_lengths(enc, final=True),
            chars,
            char_vocab.BLANK,
        ),
        "char_mid": _ctc(enc.mid_logits, enc.lengths, chars, char_vocab.BLANK),
    }
    loss = w.char_final * out["char"] + w.char_mid * out["char_mid"]
    if hasattr(model.encoder, "out_bpe") and w.bpe:
        cfg = model.config
        logits, k = model.encoder.bpe_logits(enc)
        toks = [[t + cfg.bpe_label_offset for t in tokenizer.encode(u.text)] for u in batch.items]
        out["bpe"] = _ctc(logits, k, toks, cfg.bpe_blank_id)
        loss = loss + w.bpe * out["bpe"]
    out["loss"] = loss
    return out


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """batch: ids (B, L) right-padded, valid (B, L) bool. Next-token CE on valid positions."""
    ids, valid = batch
    lm = model.language_model
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    hidden = lm(lm.embed(ids), valid, pos)
    logits = lm.logits(hidden[:, :-1]).float()
    labels = ids[:, 1:].masked_fill(~valid[:, 1:], IGNORE)
    return {
        "loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    }


def with_text(loss_fn, weight: float):
    """`loss_fn` plus `weight` × next-token loss on the text batch a speech batch carries (`batch.text`).

    The small decoder memorises the few thousand transcripts of a speech corpus and forgets the language
    it learned in the lm stage (recipes/RESULTS.md, session 3); text-only batches trained beside every
    speech batch keep that language model, the role a pretrained LLM's breadth plays in the real system
    (NOTES: language knowledge belongs in the LLM)."""

    def loss(model: nn.Module, batch: FeatureBatch) -> dict:
        res = loss_fn(model, batch)
        if batch.text is not None:
            res["text"] = lm_loss(model, batch.text)["loss"]
            res["loss"] = res["loss"] + weight * res["text"]
        return res

    return loss


# ----------------------------------------------------------------------------------------- speech (b)
@dataclass(frozen=True)
class SpeechExample:
    prompt: str
    answer: str


def speech_examples(
    batch: FeatureBatch,
    variant: str,
    rng,
    p_translate: float,
    p_no_language: float = 0.5,
    p_keywords: float = 0.1,
    p_translate_en: float | None = None,
) -> list[SpeechExample]:
    """ASR for most items; X→en or en→X translation where the manifest has a parallel text.

    English items translate with probability `p_translate_en` (default `p_translate`). An English item
    splits its translations over five targets while every other item has one, so at one shared rate each
    en→X direction gets a fifth of X→en's share of the batch. Too few en→X prompts can make a model answer
    them in English (grow8d, recipes/RESULTS.md session 13).

    ASR prompts come in the forms users send (SPEC §5.6): with the language named, without it (the
    default when `language=None`, fraction `p_no_language`), and on 2b with keyword biasing (`p_keywords`):
    one or two long words of the transcript plus one from another item of the batch as a distractor, so
    the model learns to use a keyword when it is spoken and to ignore it when it is not."""
    out = []
    for i, u in enumerate(batch.items):
        targets = [lang for lang in u.translation if lang != u.lang]
        p = p_translate if u.lang != "en" or p_translate_en is None else p_translate_en
        if variant == "ar" and targets and rng.random() < p:
            tgt = "en" if "en" in targets else targets[int(rng.integers(len(targets)))]
            prompt = build_prompt(variant, task="translate", language=u.lang, target_language=tgt)
            out.append(SpeechExample(prompt, u.translation[tgt]))
            continue
        keywords = _keywords(batch, i, rng) if variant == "ar" and rng.random() < p_keywords else None
        language = None if rng.random() < p_no_language else u.lang
        out.append(SpeechExample(build_prompt(variant, language=language, keywords=keywords), u.text))
    return out


def _keywords(batch: FeatureBatch, i: int, rng) -> list[str] | None:
    def long_words(u) -> list[str]:  # Japanese has no spaces to find words by: no keywords from it
        return [] if u.lang == "ja" else [w.strip(".,;:!?\"'()«»¿¡") for w in u.text.split() if len(w) >= 6]

    own = long_words(batch.items[i])
    if not own:
        return None
    picks = [
        own[int(k)] for k in rng.choice(len(own), size=min(len(own), int(rng.integers(1, 3))), replace=False)
    ]
    others = [w for j, u in enumerate(batch.items) if j != i for w in long_words(u)]
    if others:
        picks.insert(int(rng.integers(len(picks) + 1)), others[int(rng.integers(len(others)))])
    return list(dict.fromkeys(w for w in picks if w))


def speech_inputs(model: nn.Module, tokenizer, batch: FeatureBatch, examples: list[SpeechExample]):
    """Right-padded ids (B, L), valid mask and labels with the prompt masked out, on the batch's device."""
    counts = model.geometry.audio_tokens(batch.lengths).tolist()
    rows, labels = [], []
    for ex, n in zip(examples, counts, strict=True):
        p = tokenizer.encode(expand_audio_tokens(ex.prompt, int(n)))
        a = tokenizer.encode(ex.answer) + [tokenizer.eos_id]
        rows.append(p + a)
        labels.append([IGNORE] * len(p) + a)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
    valid = torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]
    device = batch.features.device
    return ids.to(device), valid.to(device), lab.to(device)


def _speech_forward(model: nn.Module, batch: FeatureBatch, tokenizer, examples: list[SpeechExample]):
    """(answer-token cross-entropy, encoder output). The vocabulary projection runs on the answer
    positions only: over an 8 k vocabulary it costs as much as the small decoder itself on every prompt
    and audio position, and those positions carry no loss."""
    ids, valid, labels = speech_inputs(model, tokenizer, batch, examples)
    embeds, _, enc = model.embed_inputs(ids, batch.features, None, batch.lengths)
    return answer_loss(model, embeds, valid, labels), enc


def answer_loss(model: nn.Module, embeds: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor):
    """Decoder over (B, L, E) input embeddings; cross-entropy on the labelled (answer) positions only."""
    hidden = model.language_model(embeds, valid, positions_from_mask(valid))  # (B, L, E)
    scored = labels[:, 1:] != IGNORE  # (B, L-1): position t predicts token t+1
    logits = model.language_model.logits(hidden[:, :-1][scored]).float()  # (N, V)
    return F.cross_entropy(logits, labels[:, 1:][scored])


def speech_loss(model: nn.Module, batch: FeatureBatch, tokenizer, examples: list[SpeechExample]) -> dict:
    return {"loss": _speech_forward(model, batch, tokenizer, examples)[0]}


def joint_loss(
    model: nn.Module,
    batch: FeatureBatch,
    tokenizer,
    examples: list[SpeechExample],
    w: EncoderWeights = EncoderWeights(),
    speech_weight: float = 1.0,
) -> dict:
    """Encoder CTC losses (a) and the speech LM loss (b) from one encoder pass, everything trained: the
    compute-bounded variant of encoder → speech (the decoder learns to read the encoder as it forms)."""
    ce, enc = _speech_forward(model, batch, tokenizer, examples)
    res = encoder_loss(model, batch, tokenizer, w, enc=enc)
    res["speech"] = ce
    res["loss"] = res["loss"] + speech_weight * ce
    return res


# ----------------------------------------------------------------------------------------- nar (c)
def nar_loss(model: nn.Module, batch: FeatureBatch, tokenizer, draft_dropout: float, rng) -> dict:
    """CTC over the slot logits (blank = blank_token_id) against the reference tokens (SPEC §6.1).

    The draft comes from the frozen encoder's BPE head; with probability `draft_dropout` per token it is
    corrupted (deleted or replaced) so the editor also learns to insert and substitute.
    """
    with torch.no_grad():
        enc = model.encoder(batch.features, batch.lengths)
        drafts = model.draft(enc)
    valid = torch.arange(enc.features.shape[1], device=enc.lengths.device)[None] < enc.lengths[:, None]
    audio = model.projector(enc.features, valid)
    if model.config.scale_projected_embeddings:
        audio = audio / model.config.text.embedding_multiplier
    counts = model.geometry.audio_tokens(enc.lengths)
    vocab = model.config.text.vocab_size
    noisy = []
    for d in drafts:
        keep = [t for t in d if rng.random() >= draft_dropout / 2]
        noisy.append([int(rng.integers(vocab)) if rng.random() < draft_dropout / 2 else t for t in keep])
    packed = model.pack([audio[i, : int(n)] for i, n in enumerate(counts)], [model.slots(d) for d in noisy])
    slot_logits = model.edit(packed)
    refs = [tokenizer.encode(u.text) for u in batch.items]
    width = max(lg.shape[0] for lg in slot_logits)
    logits = torch.stack([F.pad(lg, (0, 0, 0, width - lg.shape[0])) for lg in slot_logits])
    lengths = torch.tensor([lg.shape[0] for lg in slot_logits], device=logits.device)
    return {"loss": _ctc(logits, lengths, refs, model.config.blank_token_id)}
