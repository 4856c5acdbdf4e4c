"""The command line of the training stages (`granite-asr train STAGE`, `python -m granite_asr.train`):
one flat set of options, each saying which stages read it; `recipe.py` holds the stages themselves."""

from __future__ import annotations

import argparse


def _add_wordlm_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--order", type=int, default=3, help="wordlm stage: n-gram order")
    ap.add_argument("--min-count", type=int, default=2, help="wordlm stage: drop rarer n-grams (order > 1)")
    ap.add_argument(
        "--general-words", type=int, default=0, help="wordlm stage: add wordfreq's N most frequent words"
    )
    ap.add_argument(
        "--general-weight", type=float, default=1.0,
        help="wordlm stage: the general words' pseudo-counts, as a multiple of the sentences' token count",
    )  # fmt: skip
    ap.add_argument(
        "--spell-check", action="store_true",
        help="wordlm stage: keep only general words a hunspell dictionary accepts (en/fr/de/es/pt)",
    )  # fmt: skip


def _add_export_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--auto-mode", choices=["ar", "ctc", "speculative"], help="export: what mode='auto' runs")
    ap.add_argument("--ctc-head", choices=["bpe", "char"], help="export: the head mode='ctc' reads")
    ap.add_argument("--ctc-char-layer", choices=["mid", "final"], help="export: where the char head reads")
    ap.add_argument(
        "--base", help="export: leave out the tensors identical to this checkpoint's (read from it at load)"
    )


def _add_text_arguments(ap: argparse.ArgumentParser) -> None:
    """Text for the tokenizer and lm stages, and the text batches trained beside speech."""
    ap.add_argument(
        "--text",
        help="tokenizer/lm stages and --text-weight: a text file, one document per line (default: offline corpus text)",
    )
    ap.add_argument(
        "--text-pairs", action="store_true",
        help="lm stage and --text-weight: only the offline text's translation pairs (`src\\nLanguage: tgt`)",
    )  # fmt: skip
    ap.add_argument("--batch-tokens", type=int, default=6000, help="lm stage: tokens per batch")
    ap.add_argument(
        "--text-weight",
        type=float,
        default=0.0,
        help="joint/speech/plus: weight of a next-token loss on text-only batches beside each speech batch",
    )
    ap.add_argument(
        "--text-batch-tokens", type=int, default=2000, help="tokens per text batch (--text-weight)"
    )


def _add_augment_arguments(ap: argparse.ArgumentParser) -> None:
    """Feature-level augmentations of the speech stages, applied to the cached features."""
    ap.add_argument("--spec-augment", action="store_true")
    ap.add_argument(
        "--vtlp",
        type=float,
        default=0.0,
        help="vocal-tract-length perturbation: max mel-axis warp (e.g. 0.1)",
    )
    ap.add_argument(
        "--eq-db", type=float, default=0.0,
        help="random spectral colouring: peak gain (dB) of a smooth per-utterance mel-axis curve (e.g. 6)",
    )  # fmt: skip
    ap.add_argument(
        "--tempo", type=float, default=1.0,
        help="tempo perturbation: half the utterances slowed by up to this factor (e.g. 1.3; "
        "log-mel resampled in time, pitch kept); not for the Plus stage, whose word times it would move",
    )  # fmt: skip
    ap.add_argument(
        "--gain-db", type=float, default=0.0,
        help="recording level: half the utterances made quieter by up to this many dB (e.g. 24)",
    )  # fmt: skip


def parser(stages: list[str], description: str, langs: tuple[str, ...]) -> argparse.ArgumentParser:
    """`granite-asr train STAGE ...`: one parser for every stage (`recipe.STAGES`)."""
    ap = argparse.ArgumentParser(
        prog="granite-asr train",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("stage", choices=stages)
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", help="checkpoint directory or hub id to start from")
    ap.add_argument("--inputs", nargs="+", help="average stage: the checkpoints to average")
    ap.add_argument("--tokenizer", help="directory with tokenizer.json (lm stage without --init)")
    ap.add_argument("--preset", default="default")
    ap.add_argument(
        "--rebuild", action="store_true", help="rebuild --init as --preset, keeping matching tensors"
    )
    ap.add_argument("--corpus", help="corpus directory with train.jsonl (granite_asr.data.corpus)")
    ap.add_argument(
        "--cache", default=None, help="feature cache directory (default: <corpus>/features-<preset>)"
    )
    ap.add_argument("--split", default="train", help="manifest <corpus>/<split>.jsonl to train on")
    ap.add_argument("--langs", default=",".join(langs))
    _add_text_arguments(ap)
    ap.add_argument("--vocab", type=int, default=8192)
    _add_wordlm_arguments(ap)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--batch-seconds", type=float, default=160.0, help="audio per batch (padded)")
    _add_augment_arguments(ap)
    ap.add_argument(
        "--precompute-encoder", action="store_true",
        help="speech stage: run the frozen encoder once over the split and train on its outputs",
    )  # fmt: skip
    ap.add_argument("--p-translate", type=float, default=0.3)
    ap.add_argument(
        "--p-translate-en", type=float, default=None,
        help="share of English items given an en→X prompt (default: --p-translate)",
    )  # fmt: skip
    ap.add_argument("--p-speakers", type=float, default=0.4, help="plus stage: share of speaker-turn prompts")
    ap.add_argument("--p-timestamps", type=float, default=0.4, help="plus stage: share of word-time prompts")
    ap.add_argument("--bpe-weight", type=float, default=0.5, help="encoder stage: weight of the BPE CTC loss")
    ap.add_argument("--speech-weight", type=float, default=1.0, help="joint stage: weight of the LM loss")
    ap.add_argument("--draft-dropout", type=float, default=0.1)
    ap.add_argument("--encoder-from", help="checkpoint whose encoder replaces --init's (re-base a sibling)")
    ap.add_argument(
        "--char-upsample", type=int, default=0,
        help="give --init's last-block char head this many labels per encoder frame (encoder.char_upsample;"
        " a new head starts as the old one, each label repeated); 0 = keep --init's",
    )  # fmt: skip
    ap.add_argument("--lora-r", type=int, default=0)
    ap.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
    _add_export_arguments(ap)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument(
        "--keep-every", type=int, default=0,
        help="also keep the weights every N steps as <out>/step-NNNNNN (for `average`); 0 = only latest",
    )  # fmt: skip
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--stop-at", type=int, default=0, help="checkpoint and stop at this step (resume later)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fsdp", action="store_true", help="under torchrun: FSDP (sharded weights) instead of DDP"
    )
    ap.add_argument(
        "--device", default="cpu",
        help="cpu, or cuda (under torchrun: each rank's GPU by LOCAL_RANK, NCCL) or cuda:N",
    )  # fmt: skip
    return ap
