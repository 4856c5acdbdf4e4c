"""One command per training stage (issue 4 §3), IBM-style: tokenizer → lm → encoder → speech → nar.

    python -m granite_asr.train tokenizer --out runs/default/tokenizer --vocab 8192 --seed 0
    python -m granite_asr.train lm      --tokenizer runs/default/tokenizer --out runs/default/lm
    python -m granite_asr.train encoder --init runs/default/lm/latest --corpus data/corpus --out runs/default/encoder
    python -m granite_asr.train speech  --init runs/default/encoder/latest --corpus data/corpus --out runs/default/speech
    python -m granite_asr.train nar     --init runs/default/speech/latest --corpus data/corpus --out runs/default/nar
    python -m granite_asr.train wordlm  --out granite_asr/assets/wordlm --general-words 50000  # char-CTC search

Every stage writes `<out>/latest` in the official checkpoint layout and resumes from it when re-run.
`--init` also accepts the official checkpoints (a directory or hub id), so the same stages fine-tune
2b / 2b-nar / 2b-plus (use `--lora-r` to train adapters and merge them on save).

Every stage but tokenizer and wordlm also runs under torchrun (issue 7 §3): the same global batches, sharded across
processes (DDP; `--fsdp` shards the parameters), rank 0 logging and checkpointing; `--device cuda` trains
on GPUs (one per rank, NCCL), e.g. to fine-tune the official checkpoints:

    torchrun --nproc_per_node 4 -m granite_asr.train encoder --init … --corpus data/corpus --out runs/encoder
    torchrun --nproc_per_node 8 -m granite_asr.train speech --device cuda --init ibm-granite/granite-speech-4.1-2b …
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..config import SpeechConfig, preset
from ..model.build import build_model
from ..model.checkpoint import load_pretrained, save_pretrained
from ..model.lora import apply_lora, merge_lora
from ..tokenizer import Tokenizer
from . import distributed, plus, word_lms
from . import objectives as obj
from .arguments import parser
from .average import average_checkpoints
from .data import (
    FeatureCache,
    collate,
    epoch_batches,
    random_eq,
    random_gain,
    random_tempo,
    spec_augment,
    vtlp,
)
from .encoded import EncodedCache, encoded_speech_loss
from .loop import LoopConfig, Trainer
from .text_data import lm_batches, train_tokenizer, training_text

LANGS = ("en", "fr", "de", "es", "pt", "ja")


def _config_for_tokenizer(base: SpeechConfig, tok: Tokenizer) -> SpeechConfig:
    """Fit a preset to a trained tokenizer: vocabulary, special ids, BPE head width (+1 for blank)."""
    text = dataclasses.replace(
        base.text,
        vocab_size=tok.vocab_size,
        bos_token_id=tok.eos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    enc = dataclasses.replace(base.encoder, bpe_output_dim=tok.vocab_size)  # text tokens + blank
    return base.replace(
        text=text, encoder=enc, audio_token_index=tok.audio_token_id, blank_token_id=tok.eos_id,
        bpe_blank_id=0, bpe_label_offset=1,
    )  # fmt: skip


def _freeze_all_but(model: torch.nn.Module, prefixes: tuple[str, ...]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(prefixes)


def _feature_batches(model, args):
    split = args.split
    with distributed.main_first(distributed.context()):  # rank 0 writes the cache, the others read it
        cache = FeatureCache.build(
            Path(args.corpus) / f"{split}.jsonl", Path(args.cache), split, model.config
        )
    rng = np.random.default_rng(args.seed)
    # its own stream, so runs without --tempo draw every other augmentation exactly as before
    tempo_rng = np.random.default_rng(args.seed + 3)
    if args.tempo != 1.0 and model.geometry.nar:
        raise ValueError("--tempo applies to the AR/Plus geometry only (the NAR's frames are fixed)")
    epoch = 0
    while True:
        for b in epoch_batches(
            cache, args.batch_seconds, model.geometry.encoder_frame_seconds, 64, args.seed + epoch
        ):
            fb = collate(cache, b)
            if args.tempo != 1.0:
                fb.features, fb.lengths = random_tempo(
                    fb.features, fb.lengths, model.geometry, tempo_rng, args.tempo
                )
            if args.vtlp:
                fb.features = vtlp(fb.features, model.config.features.n_mels, rng, args.vtlp)
            if args.eq_db:
                fb.features = random_eq(
                    fb.features, fb.lengths, model.config.features.n_mels, rng, args.eq_db
                )
            if args.gain_db:
                fb.features = random_gain(fb.features, fb.lengths, rng, args.gain_db)
            if args.spec_augment:
                fb.features = spec_augment(fb.features, fb.lengths, model.config.features.n_mels, rng)
            yield fb
        epoch += 1


def _loop_config(args, recipe: dict) -> LoopConfig:
    return LoopConfig(
        out_dir=args.out, steps=args.steps, lr=args.lr, warmup=args.warmup, bf16=not args.fp32,
        log_every=args.log_every, ckpt_every=args.ckpt_every, keep_every=args.keep_every,
        max_minutes=args.max_minutes, seed=args.seed,
        stop_at=args.stop_at, fsdp=args.fsdp, device=args.device,
        recipe={**recipe, "argv": vars(args)},
    )  # fmt: skip


def _train(model, args, loss_fn, batches, recipe: dict) -> None:
    torch.manual_seed(args.seed)
    trainer = Trainer(model, _loop_config(args, recipe), loss_fn)
    if trainer.try_resume() and trainer.dist.is_main:
        print(f"resumed {args.out} at step {trainer.step}", flush=True)
    trainer.run(batches)
    if args.lora_r:
        merge_lora(model)
        trainer.save()


def _load_init(args) -> torch.nn.Module:
    model = load_pretrained(args.init, dtype=torch.float32)
    if model.tokenizer is None:
        raise SystemExit(f"{args.init}: the checkpoint has no tokenizer.json")
    if args.encoder_from:
        _take_encoder(model, args.encoder_from)
    if args.rebuild:
        model = _rebuild(model, args.preset)
    if args.char_upsample and args.char_upsample != model.config.encoder.char_upsample:
        model = _upsample_char_head(model, args.char_upsample)
    return model


def _upsample_char_head(old: torch.nn.Module, factor: int) -> torch.nn.Module:
    """`old` with `encoder.char_upsample` = `factor`: every tensor kept, `encoder.out_up` new (it starts
    as copies of each frame, `ConformerEncoder.reset_char_upsample`). recipes/RESULTS.md, session 26."""
    cfg = old.config
    model = _copy_into(cfg.replace(encoder=dataclasses.replace(cfg.encoder, char_upsample=factor)), old)
    if factor > 1:
        model.encoder.reset_char_upsample()
    print(f"char head: {factor} labels per encoder frame", flush=True)
    return model


def _take_encoder(model: torch.nn.Module, source: str) -> None:
    """Replace `model`'s encoder with `source`'s (same shapes): re-bases a sibling (NAR, Plus) on a
    retrained encoder so its projector and decoder can adapt to it, instead of training them anew."""
    theirs = load_pretrained(source, dtype=torch.float32).state_dict()
    own = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    bad = sorted(k for k, v in own.items() if k not in theirs or theirs[k].shape != v.shape)
    if bad:
        raise SystemExit(f"--encoder-from {source}: encoder tensors missing or of another shape: {bad[:5]}")
    model.load_state_dict({k: theirs[k] for k in own}, strict=False)
    print(f"encoder from {source}: {len(own)} tensors", flush=True)


def _with_text(model, args, loss_fn, batches):
    """(loss, batches) with a text batch beside every speech batch when `--text-weight` > 0
    (`objectives.with_text`): the lm stage's documents (held-out sentences excluded)."""
    if not args.text_weight:
        return loss_fn, batches
    docs = _documents(args)
    text = lm_batches(docs, model.tokenizer, args.text_batch_tokens, 128, args.seed + 5)

    def mixed():
        for fb in batches:
            yield dataclasses.replace(fb, text=next(text))

    return obj.with_text(loss_fn, args.text_weight), mixed()


def _documents(args) -> list[str]:
    """Text documents: `--text` (one per line) or the offline corpus text, held-out sentences excluded."""
    if args.text and args.text_pairs:
        raise SystemExit("--text-pairs selects from the offline text: it cannot be used with --text")
    if args.text:
        return [line for line in Path(args.text).read_text("utf-8").splitlines() if line.strip()]
    return training_text(tuple(args.langs.split(",")), args.seed, pairs_only=args.text_pairs)


def _copy_into(cfg, old: torch.nn.Module) -> torch.nn.Module:
    """A new model of config `cfg` holding every tensor of `old` whose name and shape match, and `old`'s
    tokenizer and chat template; the rest keep their fresh initialisation."""
    model = build_model(cfg)
    own = model.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    model.tokenizer, model.chat_template = old.tokenizer, getattr(old, "chat_template", None)
    print(f"{len(kept)}/{len(own)} tensors copied", flush=True)
    return model


def _rebuild(old: torch.nn.Module, name: str) -> torch.nn.Module:
    """Build preset `name` fitted to `old`'s tokenizer and copy every tensor whose name and shape match
    (e.g. keep a pretrained decoder while changing the encoder's frame rate)."""
    print(f"rebuilt as preset {name!r}", flush=True)
    return _copy_into(_config_for_tokenizer(preset(name), old.tokenizer), old)


# ----------------------------------------------------------------------------------------------- stages
def stage_tokenizer(args) -> None:
    docs = _documents(args)
    path = train_tokenizer(docs, args.vocab, Path(args.out))
    print(json.dumps({"tokenizer": str(path), "documents": len(docs)}))


def stage_wordlm(args) -> None:
    """The char-CTC search's word LMs (`train/word_lms.py`), one `<lang>.tsv.gz` per language, from the
    offline sentences minus the held-out ones, or from `--text` (one sentence per line, one language);
    `--general-words N` adds wordfreq's N most frequent words to each lexicon."""
    langs = args.langs.split(",")
    if args.text and len(langs) != 1:
        raise SystemExit("--text builds one language's word LM: give exactly one --langs")
    for lang in langs:
        sentences = _documents(args) if args.text else word_lms.word_lm_sentences(lang, args.seed)
        lm = word_lms.build(
            lang, sentences, order=args.order, min_count=args.min_count,
            general_words=args.general_words, general_weight=args.general_weight,
            spell_check=args.spell_check,
        )  # fmt: skip
        path = lm.save(Path(args.out) / f"{lang}.tsv.gz")
        summary = {
            "lang": lang,
            "sentences": len(sentences),
            "ngrams": len(lm.counts),
            "words": len(lm.words),
        }
        print(json.dumps({**summary, "file": str(path)}))


def stage_lm(args) -> None:
    if args.init:  # the checkpoint carries its tokenizer
        model = _load_init(args)
    else:
        tok = Tokenizer.from_dir(args.tokenizer)
        model = build_model(_config_for_tokenizer(preset(args.preset), tok))
        model.tokenizer = tok
    _freeze_all_but(model, ("language_model.",))
    docs = _documents(args)  # --text: one document per line (domain text, tests)
    batches = lm_batches(docs, model.tokenizer, args.batch_tokens, 128, args.seed)
    _train(model, args, obj.lm_loss, batches, {"stage": "lm", "documents": len(docs)})


def stage_encoder(args) -> None:
    model = _load_init(args)
    _freeze_all_but(model, ("encoder.",))
    tok, weights = model.tokenizer, obj.EncoderWeights(bpe=args.bpe_weight)
    batches = _feature_batches(model, args)
    _train(model, args, lambda m, b: obj.encoder_loss(m, b, tok, weights), batches, {"stage": "encoder"})


def stage_joint(args) -> None:
    """Encoder (a) and speech (b) objectives together, every part trained; see `objectives.joint_loss`."""
    model = _load_init(args)
    _freeze_all_but(model, ("encoder.", "projector.", "language_model."))
    tok, weights = model.tokenizer, obj.EncoderWeights(bpe=args.bpe_weight)
    rng = np.random.default_rng(args.seed + 1)

    def loss(m, b):
        examples = obj.speech_examples(
            b, m.variant, rng, args.p_translate, p_translate_en=args.p_translate_en
        )
        return obj.joint_loss(m, b, tok, examples, weights, args.speech_weight)

    _train(model, args, *_with_text(model, args, loss, _feature_batches(model, args)), {"stage": "joint"})


def stage_speech(args) -> None:
    model = _load_init(args)
    _train_projector_and_decoder(model, args)
    rng = np.random.default_rng(args.seed + 1)
    examples = lambda b: obj.speech_examples(  # noqa: E731
        b, model.variant, rng, args.p_translate, p_translate_en=args.p_translate_en
    )
    _speech_on(model, args, examples, rng, {"stage": "speech"})


def _train_projector_and_decoder(model, args) -> None:
    """Freeze the encoder; with `--lora-r` the decoder trains LoRA adapters (merged on save)."""
    _freeze_all_but(model, ("projector.", "language_model."))
    if args.lora_r:
        apply_lora(model.language_model, r=args.lora_r, alpha=2 * args.lora_r)
        for name, p in model.named_parameters():
            p.requires_grad = p.requires_grad or name.startswith("projector.")


def _speech_on(model, args, examples, rng, recipe: dict) -> None:
    """Projector + decoder on `examples(batch)`, over log-mels or precomputed encoder outputs (where
    `rng` also draws the output masking, in the order session 3's recorded runs used)."""
    if args.precompute_encoder:
        loss, batches = _encoded_speech(model, args, examples, rng)
        recipe = {**recipe, "precomputed": True}
    else:
        tok = model.tokenizer
        loss = lambda m, b: obj.speech_loss(m, b, tok, examples(b))  # noqa: E731
        batches = _feature_batches(model, args)
    _train(model, args, *_with_text(model, args, loss, batches), recipe)


def stage_plus(args) -> None:
    """The Plus sibling (`train/plus.py`): an AR checkpoint in the Plus composition (or a Plus checkpoint,
    e.g. the official 2b-plus), projector + decoder trained on speaker-turn and word-time prompts."""
    if args.tempo != 1.0:  # the `[T:cs]` targets are the synthesis-time word ends of the unstretched audio
        raise ValueError("--tempo would move the word times the Plus stage trains on; leave it at 1")
    model = _load_init(args)
    if model.variant == "ar":
        model = plus.plus_from_ar(model)
    _train_projector_and_decoder(model, args)
    rng = np.random.default_rng(args.seed + 3)
    examples = lambda b: plus.plus_examples(b, rng, args.p_speakers, args.p_timestamps)  # noqa: E731
    _speech_on(model, args, examples, rng, {"stage": "plus"})


def _encoded_speech(model, args, examples, rng):
    """(loss, batches) over encoder outputs computed once (`train/encoded.py`); the frozen encoder's
    output is masked per batch (channels and time spans) in place of input augmentation."""
    with distributed.main_first(distributed.context()):
        cache = FeatureCache.build(
            Path(args.corpus) / f"{args.split}.jsonl", Path(args.cache), args.split, model.config
        )
    encoded = EncodedCache.build(model.to(args.device), cache)  # on the training device
    tok = model.tokenizer

    def batches():
        epoch = 0
        while True:
            frame = model.geometry.encoder_frame_seconds
            for b in epoch_batches(encoded, args.batch_seconds, frame, 64, args.seed + epoch):
                fb = collate(encoded, b)
                if args.spec_augment:
                    fb.features = spec_augment(fb.features, fb.lengths, fb.features.shape[-1], rng)
                yield fb
            epoch += 1

    return (lambda m, b: encoded_speech_loss(m, b, tok, examples(b))), batches()


def stage_nar(args) -> None:
    """Build the NAR sibling from an AR checkpoint (same encoder and LLM weights, a new NLE projector),
    or fine-tune a NAR checkpoint as it is (e.g. the official 2b-nar, or ours re-based with
    `--encoder-from`)."""
    ar = _load_init(args)
    if ar.variant == "nar":
        _train_nar(ar, args)
        return
    from ..config import NarProjectorConfig

    c = ar.config
    taps = tuple(max(1, round(c.encoder.num_layers * f)) for f in (0.25, 0.5, 0.75)) + (-1,)
    proj = NarProjectorConfig(
        encoder_dim=c.encoder.hidden_dim, num_encoder_layers=4, hidden_size=c.text.hidden_size,
        num_heads=max(1, c.text.hidden_size // 64), block_size=c.window_size, downsample_rate=c.downsample_rate,
        llm_dim=c.text.hidden_size,
    )  # fmt: skip
    cfg = c.replace(variant="nar", projector=proj, encoder_layer_indices=taps)
    model = build_model(cfg)
    own = model.state_dict()
    model.load_state_dict(
        {
            k: v
            for k, v in ar.state_dict().items()
            if k in own and k.startswith(("encoder.", "language_model."))
        },
        strict=False,
    )
    model.tokenizer = ar.tokenizer
    _train_nar(model, args)


def _train_nar(model, args) -> None:
    """Projector + decoder on the edit objective; the encoder (and so the draft) stays fixed."""
    _freeze_all_but(model, ("projector.", "language_model."))
    tok, rng = model.tokenizer, np.random.default_rng(args.seed + 2)
    batches = _feature_batches(model, args)
    _train(
        model, args, lambda m, b: obj.nar_loss(m, b, tok, args.draft_dropout, rng), batches, {"stage": "nar"}
    )


def stage_export(args) -> None:
    """Write --init as a shippable checkpoint: the official layout in bfloat16 (the embedded default is
    stored this way, issue 4 §4); `--fp32` keeps float32. `--auto-mode`/`--ctc-head`/`--ctc-char-layer`
    record how the checkpoint transcribes by default (`SpeechConfig.auto_mode`, `ctc_head`, `ctc_char_layer`)."""
    _export(load_pretrained(args.init, dtype=torch.float32), args, args.init)


def stage_average(args) -> None:
    """Write the element-wise mean of --inputs (e.g. the `--keep-every` snapshots of one run) as
    `export` writes a checkpoint, with the same flags (`average.py`)."""
    _export(average_checkpoints(args.inputs), args, f"mean of {len(args.inputs)} checkpoints")


def _export(model, args, source: str) -> None:
    if args.auto_mode or args.ctc_head or args.ctc_char_layer:
        model.config = model.config.replace(
            auto_mode=args.auto_mode or model.config.auto_mode,
            ctc_head=args.ctc_head or model.config.ctc_head,
            ctc_char_layer=args.ctc_char_layer or model.config.ctc_char_layer,
        )
    out = save_pretrained(
        model, args.out, dtype=torch.float32 if args.fp32 else torch.bfloat16, base=args.base
    )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported {source} -> {out} ({size / 2**20:.1f} MiB)", flush=True)


STAGES = {
    "tokenizer": stage_tokenizer,
    "lm": stage_lm,
    "encoder": stage_encoder,
    "speech": stage_speech,
    "joint": stage_joint,
    "nar": stage_nar,
    "plus": stage_plus,
    "export": stage_export,
    "average": stage_average,
    "wordlm": stage_wordlm,
}


def main(argv: list[str] | None = None) -> None:
    args = parser(sorted(STAGES), __doc__, LANGS).parse_args(argv)
    if args.corpus and not args.cache:
        args.cache = str(Path(args.corpus) / "features")
    if args.stage not in ("tokenizer", "wordlm", "export", "average"):  # the stages that train a model
        args.device = str(distributed.resolve_device(args.device))
    distributed.init_from_env(args.device)  # torchrun's environment → a process group; nothing without it
    try:
        STAGES[args.stage](args)
    finally:
        distributed.shutdown()
