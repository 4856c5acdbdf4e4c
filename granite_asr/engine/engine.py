"""The batched engine: 16 kHz audio arrays → token ids, text and char-CTC posteriors (issue 3 item 1).

Legend:
    B  rows in a batch    T  encoder frames    L  prompt length    E  LLM width    C  char labels (348)

Per length bucket (`batching.py`): features → the encoder runs ONCE → one decoding mode:

- "ar":          prompt + audio embeddings → greedy or beam search over the KV cache (SPEC §5.6–5.7);
- "nar":         BPE draft → slots → one packed bidirectional editing pass (SPEC §6.2);
- "ctc":         the BPE CTC head, or the char head on a model without one (Plus) or whose config says
                 `ctc_head="char"`, no LLM (SPEC §3.6); `auto` runs it where the config's `auto_mode` says so;
- "speculative": BPE draft, verified by one LLM pass, AR fallback per row (SPEC §5.8).

Every item also gets its char-CTC log-posteriors from the same encoder pass, for word alignment.
Each clip is featurised alone and the encoder masks padding, so a clip gives the same tokens alone
and inside any batch (tested), which makes bucketing free to reorder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import char_vocab
from ..audio.features import AudioBatch, FeatureExtractor
from ..decoding import lexicon
from ..decoding.beam import autoregressive
from ..decoding.ctc import char_lengths, char_logits
from ..decoding.ctc import encode as encode_only
from ..decoding.greedy import Hypothesis, prefill
from ..decoding.speculative import ctc_scored, speculative_decode
from ..lengths import FrameGeometry, lengths_to_mask
from ..model.checkpoint import cast_floating_state
from ..model.conformer import EncoderOutput
from ..model.ctc import greedy_decode
from ..model.quantize import is_quantized
from ..options import TranscribeOptions
from ..prompts import build_prompt, canonical_language, encode_prompts, time_tag_token_ids
from .batching import BatchPlan, auto_limits, plan_batches

# Timestamp mode's token budget per second of audio (`Engine._budgets`): ~4 words/s at ~14 tokens each.
TIMESTAMP_TOKENS_PER_SECOND = 60


@dataclass(frozen=True, eq=False)
class EngineResult:
    """One input clip's decode. `text` is tokenizer-decoded with special tokens skipped, stripped.

    mode_used: "ar" | "nar" | "ctc" | "speculative-ctc" | "speculative-verified" | "speculative-ar"
    char_logits: (T', 348) float32 on CPU, log_softmax of the char-CTC head (blank = 0); T' =
        `FrameGeometry.char_frames(T)` rows of `frame_seconds` each (`encoder_frames` counts them)
    draft_tokens: the BPE-CTC draft (nar and speculative modes), else ()
    stop_reason: "eos" | "length" | "repeat" for AR-decoded rows, "draft" for accepted drafts, "" otherwise
    tokens / token_logprobs are () for CTC on the char head (Plus has no BPE head; only `text` is set).
    """

    tokens: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    text: str
    mode_used: str
    char_logits: torch.Tensor
    encoder_frames: int
    frame_seconds: float
    draft_tokens: tuple[int, ...] = ()
    stop_reason: str = ""

    @property
    def avg_logprob(self) -> float:
        """Mean token log-probability (Whisper's `avg_logprob`); 0.0 without tokens."""
        lps = self.token_logprobs
        return sum(lps) / len(lps) if lps else 0.0


class Engine:
    """Batched decoding for a loaded model (`granite_asr.load_model`), any variant.

    `dtype`/`device` convert the model in place (bf16 on CPU is ~4× faster for matmuls; the default keeps
    the model's dtype, fp32 for exactness).
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None, dtype=None):
        if is_quantized(model) and torch.device(device or "cpu").type != "cpu":
            # fbgemm's int8 kernels are CPU-only (model/quantize.py).
            raise ValueError(f"an int8-quantised model runs on CPU only, not on {device}")
        if dtype is not None:
            # Parameters and persistent buffers only: RoPE's inv_freq stays fp32, as at load time.
            cast_floating_state(model, dtype)
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.variant: str = model.variant
        self.geometry = FrameGeometry.from_config(model.config)
        self.features = FeatureExtractor.from_config(model.config)
        self.tokenizer = model.tokenizer
        eos = self.tokenizer.eos_id if self.tokenizer is not None else None
        self.eos_id: int = model.config.text.eos_token_id if eos is None else eos
        self._time_tag_ids: torch.Tensor | None = None  # built on the first timestamp-mode batch

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_bpe_head(self) -> bool:
        return hasattr(self.model.encoder, "out_bpe")

    @property
    def char_ctc(self) -> bool:
        """Whether mode "ctc" reads the char head (Plus has no BPE head; a config may choose it)."""
        return not self.has_bpe_head or self.model.config.ctc_head == "char"

    # ------------------------------------------------------------------ checks and planning
    def check(self, options: TranscribeOptions) -> str:
        """Validate `options` for this model before any compute; return the decoding mode to run."""
        preferred = self.model.config.auto_mode
        options.validate(self.variant, preferred)
        mode = options.resolved_mode(self.variant, preferred)
        if mode == "speculative":
            if self.variant != "ar" or not self.has_bpe_head:
                raise ValueError("mode 'speculative' needs a 2b model with its BPE CTC head (out_llm)")
            if options.task != "transcribe":
                raise ValueError("mode 'speculative' drafts a transcript; translate with mode 'ar'")
        if mode == "ctc" and options.speakers:
            raise ValueError("mode 'ctc' has no prompt: speakers need mode 'ar'")
        if mode == "ctc" and options.keywords and (not self.char_ctc or options.decode.word_lm == "none"):
            raise ValueError(
                "mode 'ctc' has no prompt: keywords need mode 'ar', or the char head's word-LM search "
                "(a checkpoint whose ctc_head is 'char', word_lm not 'none')"
            )
        if mode in ("ar", "speculative") and options.decode.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.tokenizer is None and (mode != "ctc" or self.has_bpe_head):
            raise ValueError(f"mode {mode!r} needs the checkpoint's tokenizer.json")
        return mode

    def encoder_frames(self, num_samples: int) -> int:
        """Encoder frames of a clip of `num_samples` (short clips are padded to the extractor's minimum)."""
        return int(self.geometry.encoder_frames(max(num_samples, self.features.min_samples)))

    def plan(self, num_samples: Sequence[int], options: TranscribeOptions, mode: str) -> BatchPlan:
        frames = [self.encoder_frames(n) for n in num_samples]
        if options.decode.batch_size is not None:
            rows = options.decode.batch_size
            return plan_batches(frames, max_batch_size=rows, max_frames=rows * max(frames))
        rows, budget = auto_limits(self.device, mode)
        return plan_batches(frames, max_batch_size=rows, max_frames=budget)

    # ------------------------------------------------------------------ entry point
    def run(
        self,
        audios: Sequence[np.ndarray | torch.Tensor],
        options: TranscribeOptions | None = None,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[EngineResult]:
        """Decode 1-D 16 kHz float clips → one EngineResult each, in input order.

        `on_batch(done, total)` is called after every batch (progress bars).
        """
        options = options or TranscribeOptions()
        mode = self.check(options)
        if len(audios) == 0:
            return []
        clips = FeatureExtractor.as_clips(list(audios))  # type/NaN errors before any compute
        plan = self.plan([c.shape[0] for c in clips], options, mode)
        results: list[EngineResult] = []
        with torch.inference_mode():
            for batch in plan.batches:
                results += self._run_batch([clips[i] for i in batch], options, mode)
                if on_batch is not None:
                    on_batch(len(results), len(clips))
        return plan.restore(results)

    # ------------------------------------------------------------------ one batch
    def _run_batch(
        self, clips: list[torch.Tensor], options: TranscribeOptions, mode: str
    ) -> list[EngineResult]:
        batch = self.features(clips, device=self.device)
        if mode == "nar":
            return self._nar(batch)
        if mode == "ctc":
            return self._ctc(
                clips, encode_only(self.model, batch.input_features, batch.feature_lengths), options
            )
        return self._autoregressive(batch, options, mode)

    def _prompts(self, batch: AudioBatch, options: TranscribeOptions) -> tuple[torch.Tensor, torch.Tensor]:
        target = options.target_language or ("en" if options.task == "translate" else None)
        prompt = build_prompt(
            self.variant,
            task=options.task,
            language=options.language,
            target_language=target,
            keywords=list(options.keywords) or None,
            punctuated=options.punctuated,
            speakers=options.speakers,
            timestamps=options.model_timestamps,
        )
        ids, mask = encode_prompts(self.tokenizer, [prompt] * len(batch), batch.audio_token_counts.tolist())
        return ids.to(self.device), mask.to(self.device).bool()  # (B, L), (B, L)

    def _autoregressive(self, batch: AudioBatch, options: TranscribeOptions, mode: str) -> list[EngineResult]:
        model, dec = self.model, options.decode
        audio, counts, enc = model.encode_audio(batch.input_features, batch.feature_lengths)  # (B, N, E)
        ids, valid = self._prompts(batch, options)
        embeds = model.merge_audio(ids, audio, lengths_to_mask(counts, audio.shape[1]))  # (B, L, E)
        if mode == "ar":
            budgets = self._budgets(batch, options)
            state = prefill(model, embeds, valid, max(budgets))
            skip = self._guard_skip(options)
            hyps = autoregressive(
                model, state, eos_id=self.eos_id, options=dec, guard_skip=skip, budgets=budgets
            )
            char, frames = self._char_logprobs(enc)
            return [self._result(char, frames, i, h, "ar") for i, h in enumerate(hyps)]
        rows = speculative_decode(model, enc, embeds, valid, eos_id=self.eos_id, options=dec)
        char, frames = self._char_logprobs(enc)
        return [
            self._result(char, frames, i, r.hypothesis, f"speculative-{r.path}", r.draft)
            for i, r in enumerate(rows)
        ]

    def _budgets(self, batch: AudioBatch, options: TranscribeOptions) -> list[int]:
        """Each row's token limit: `max_new_tokens`, and in timestamp mode at least
        `TIMESTAMP_TOKENS_PER_SECOND` per second of the row's own audio (so it decodes alike in any batch).

        Every `word [T:N]` tag costs ~9 tokens (the digits one by one), so 448 tokens hold ~45 timed
        words, about 15 s of speech: 30 s windows were cut mid-sentence (SPEC §7.3; the card uses 10000).
        """
        limit = options.decode.max_new_tokens
        if not options.model_timestamps:
            return [limit] * len(batch)
        seconds = [self.geometry.seconds(int(n)) for n in batch.num_samples.tolist()]
        return [max(limit, math.ceil(s * TIMESTAMP_TOKENS_PER_SECOND)) for s in seconds]

    def _guard_skip(self, options: TranscribeOptions) -> torch.Tensor | None:
        """The tokens the repetition guard looks through in timestamp mode: those of the `[T:N]` tags,
        so that it compares the words of a loop whose every copy has its own time."""
        if not options.model_timestamps:
            return None
        if self._time_tag_ids is None:
            self._time_tag_ids = torch.tensor(time_tag_token_ids(self.tokenizer), dtype=torch.long)
        return self._time_tag_ids.to(self.device)

    def _nar(self, batch: AudioBatch) -> list[EngineResult]:
        model = self.model
        enc, audio = model.encode(batch.input_features, batch.feature_lengths)
        drafts = model.draft(enc)
        logits = model.edit(model.pack(audio, [model.slots(d) for d in drafts]))  # [(S_i, V)]
        out, (char, frames) = [], self._char_logprobs(enc)
        for i, lg in enumerate(logits):
            edited = ctc_scored(lg, model.config.blank_token_id)
            hyp = Hypothesis(edited.tokens, edited.logprobs, sum(edited.logprobs), "")
            out.append(self._result(char, frames, i, hyp, "nar", tuple(drafts[i])))
        return out

    def _ctc(
        self, clips: list[torch.Tensor], enc: EncoderOutput, options: TranscribeOptions
    ) -> list[EngineResult]:
        char, frames = self._char_logprobs(enc)
        if self.char_ctc:
            char, lengths, labels, tempos = self._retempo(clips, char, frames, options)
            texts = self._char_texts(char, lengths, labels, options)
            return [
                self._result(char, lengths, i, None, "ctc", text=t, tempo=tempos[i])
                for i, t in enumerate(texts)
            ]
        logits, lengths = self.model.encoder.bpe_logits(enc)  # (B, K, V)
        cfg, out = self.model.config, []
        for i, n in enumerate(lengths.tolist()):
            dec = ctc_scored(logits[i, :n], cfg.bpe_blank_id, cfg.bpe_label_offset)
            out.append(
                self._result(
                    char, frames, i, Hypothesis(dec.tokens, dec.logprobs, sum(dec.logprobs), ""), "ctc"
                )
            )
        return out

    def _retempo(
        self, clips: list[torch.Tensor], char: torch.Tensor, lengths: torch.Tensor, options: TranscribeOptions
    ) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[float]]:
        """The char posteriors (B, T', C), their lengths, greedy labels and each row's tempo, after
        re-encoding the rows whose head is saturated (`DecodeOptions.ctc_tempo`): CTC needs a frame per
        letter and a blank between doubled ones, so a head that labels most frames is dropping letters.
        Whether a row is re-encoded depends on its own posteriors only (the encoder masks padding), so a
        clip decodes alike alone and in any batch. Measured in recipes/RESULTS.md, session 25."""
        labels = greedy_decode(char, lengths, char_vocab.BLANK)
        tempo, limit = options.decode.ctc_tempo, options.decode.ctc_saturation
        tempos = [1.0] * len(clips)
        rows = [] if tempo == 1.0 or self.geometry.nar else [
            i for i, (ids, n) in enumerate(zip(labels, lengths.tolist(), strict=True)) if len(ids) > limit * n
        ]  # fmt: skip
        if not rows:
            return char, lengths, labels, tempos
        batch = self.features([clips[i] for i in rows], device=self.device, tempo=tempo)
        again, frames = self._char_logprobs(
            encode_only(self.model, batch.input_features, batch.feature_lengths)
        )
        relabelled = greedy_decode(again, frames, char_vocab.BLANK)
        width = max(char.shape[1], again.shape[1])
        merged = torch.nn.functional.pad(char, (0, 0, 0, width - char.shape[1]))  # (B, T', C), a new tensor
        lengths = lengths.clone()
        for j, i in enumerate(rows):
            n = int(frames[j])
            merged[i, :n], lengths[i], labels[i], tempos[i] = again[j, :n], n, relabelled[j], tempo
        return merged, lengths, labels, tempos

    def _char_texts(
        self, char: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]], options: TranscribeOptions
    ) -> list[str]:
        """Greedy char-CTC text (from the rows' greedy `labels`), re-searched with the word LM of the
        clip's language when one applies (`DecodeOptions.word_lm`; without flashlight-text, "auto" keeps
        the greedy text), biased towards `options.keywords`."""
        greedy = [char_vocab.decode(ids) for ids in labels]
        source = options.decode.word_lm
        if source == "none" or (source == "auto" and not lexicon.available()):
            return greedy
        lms = lexicon.word_lms(str(lexicon.BUNDLED) if source == "auto" else source)
        language = canonical_language(options.language)
        out = []
        for i, text in enumerate(greedy):
            searched = lms.decode(char[i, : int(lengths[i])], text, language, options.keywords)
            out.append(text if searched is None else searched)
        return out

    def _char_logprobs(self, enc: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's char-head log-posteriors (B, T', C), fp32, and their valid frames (B,), computed
        once per batch: every result carries its rows (word alignment, confidence, blank-run cuts when
        the VAD is off)."""
        logprobs = torch.log_softmax(char_logits(self.model, enc).float(), -1)
        return logprobs, char_lengths(self.model, enc)

    def _result(
        self,
        char: torch.Tensor,
        lengths: torch.Tensor,
        i: int,
        hyp: Hypothesis | None,
        mode_used: str,
        draft: tuple[int, ...] = (),
        text: str | None = None,
        tempo: float = 1.0,
    ) -> EngineResult:
        frames = int(lengths[i])
        if text is None:
            text = self.tokenizer.decode(hyp.tokens, skip_special_tokens=True).strip()
        return EngineResult(
            tokens=tuple(hyp.tokens) if hyp else (),
            token_logprobs=tuple(hyp.logprobs) if hyp else (),
            text=text,
            mode_used=mode_used,
            char_logits=char[i, :frames].cpu(),  # (T, C)
            encoder_frames=frames,
            frame_seconds=self.geometry.char_frame_seconds(tempo),
            draft_tokens=tuple(draft),
            stop_reason=hyp.stop if hyp else "",
        )
