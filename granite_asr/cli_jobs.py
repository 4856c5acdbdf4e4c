"""The job subcommands of `granite-asr`: `transcribe-corpus`, `eval`, `train`, `serve`.

They register into `cli.COMMANDS` when `cli.build_parser` imports this module, and reuse its shared argument
groups (`add_model_arguments`, `add_decoding_arguments`) and option building, so a flag means the same thing
in every command. Kept apart from `cli.py`, which holds the per-file commands and the dispatcher.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import (
    _DTYPES,
    COMMANDS,
    CLIError,
    _check_variant,
    _err,
    _load,
    _options,
    add_char_ctc_arguments,
    add_decoding_arguments,
    add_model_arguments,
    add_quantize_argument,
)
from .options import MODES


def _add_transcribe_corpus(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a folder, a quoted glob, or a JSONL/CSV manifest (audio[, id, duration])")
    p.add_argument("output", help="folder for <name>.json (+ formats), _errors/ and outcomes.jsonl")
    add_model_arguments(p)
    p.add_argument(
        "--format", "-f", action="append", default=None, choices=["txt", "json", "srt", "vtt", "tsv", "all"],
        help="formats written besides json (repeatable)",
    )  # fmt: skip
    p.add_argument("--language", default=None, help="spoken language (en, fr, de, es, pt, ja)")
    p.add_argument("--to", dest="target_language", default=None, help="translate into this language")
    p.add_argument("--speakers", action="store_true", help="speaker turns (2b-plus)")
    add_decoding_arguments(p)
    g = p.add_argument_group("scale-out and reruns (issue 7)")
    g.add_argument("--ray", action="store_true", help="run on Ray Data (a Ray instance started here)")
    g.add_argument(
        "--ray-address", default=None, help="join a Ray cluster: auto, HOST:6379, ray://HOST:10001"
    )
    g.add_argument("--actors", type=int, default=None, help="model actors (default: one per GPU/CPU slot)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0)
    g.add_argument("--gpus-per-actor", type=float, default=None, help="default: 1 on a cluster with GPUs")
    g.add_argument("--group-seconds", type=float, default=120.0, help="audio per batch of files")
    g.add_argument("--group-files", type=int, default=16, help="files per batch, at most")
    g.add_argument("--retry-errors", action="store_true", help="redo inputs that have an error record")
    g.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")


def _run_transcribe_corpus(args: argparse.Namespace) -> int:
    from .transcribe.corpus import CorpusOptions, transcribe_corpus

    try:
        options = _options(args, "translate" if args.target_language else "transcribe")
    except (TypeError, ValueError) as e:
        raise CLIError(f"error: {e}") from e
    address = args.ray_address or ("local" if args.ray else None)
    corpus = CorpusOptions(
        formats=tuple(args.format or ()), group_seconds=args.group_seconds, group_files=args.group_files,
        retry_errors=args.retry_errors, progress=options.progress, ray_address=address, actors=args.actors,
        cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, device=args.device,
        dtype=_DTYPES[args.dtype] if args.dtype else None, quantize=args.quantize,
    )  # fmt: skip
    if address is None:
        model = _load(args, options)
    else:  # each Ray actor loads its own copy; check the task against the checkpoint here, before Ray
        _check_variant(args.model, options)
        model = args.model
    try:
        report = transcribe_corpus(
            args.input, args.output, model=model, options=corpus, transcribe_options=options
        )
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"error: {e}") from e
    if args.json:
        print(json.dumps(report.to_dict()))
    _err(
        f"{report.ok} ok, {report.errors} errors of {report.total} inputs ({report.skipped} done before); "
        f"{report.audio_seconds / 3600:.3f} h of audio in {report.wall_seconds:.1f} s → {args.output}"
    )
    return 1 if report.errors else 0


COMMANDS["transcribe-corpus"] = (
    "transcribe a folder, glob or manifest into a folder of results; reruns skip what is done (--ray)",
    _add_transcribe_corpus,
    _run_transcribe_corpus,
)


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "manifest",
        help="JSONL manifest: audio, text, lang[, translation]; conversation rows (turns, words) "
        "score a 2b-plus model's speaker (WDER) and timestamp error",
    )
    p.add_argument("--model", default=None, help="checkpoint directory or hub id (default: embedded)")
    add_quantize_argument(p)
    p.add_argument("--mode", default="auto", choices=MODES)
    p.add_argument("--beam-size", type=int, default=1)
    add_char_ctc_arguments(p)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    p.add_argument("--no-translate", action="store_true", help="skip the translation (BLEU) pass")
    p.add_argument(
        "--no-language-hint", action="store_true",
        help="transcribe without naming each row's language (measures what language detection costs)",
    )  # fmt: skip
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument(
        "--by", default=None, metavar="FIELD",
        help="also score per language and value of this manifest field (e.g. engine, voice, family)",
    )  # fmt: skip
    p.add_argument(
        "--hypotheses", default=None, metavar="FILE", help="write every row's ref and hyp as JSONL"
    )


def _run_eval(args: argparse.Namespace) -> int:
    from .api import load_model
    from .evaluate import evaluate

    model = load_model(args.model, quantize=args.quantize)
    if model.variant == "plus" and _is_conversation_manifest(args.manifest):
        from .evaluate_plus import evaluate_plus

        report = evaluate_plus(model, args.manifest, limit=args.limit, batch_size=args.batch_size)
    else:
        report = evaluate(
            model, args.manifest, mode=args.mode, beam_size=args.beam_size, batch_size=args.batch_size,
            word_lm=args.word_lm, ctc_tempo=args.ctc_tempo, language_hint=not args.no_language_hint,
            limit=args.limit,
            translate=not args.no_translate, model_name=args.model or "embedded", by=args.by,
            progress=sys.stderr.isatty(),
        )  # fmt: skip
        if args.hypotheses:
            report.write_rows(args.hypotheses)
    print(report.table())
    if args.output:
        Path(args.output).write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    return 0


def _is_conversation_manifest(path: str) -> bool:
    """Conversation rows (turns with word times) get the Plus scores: WDER and timestamp error."""
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "{}")
    return "turns" in json.loads(first)


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "rest", nargs=argparse.REMAINDER, help="STAGE and its options (see `granite-asr train -- -h`)"
    )


def _run_train(args: argparse.Namespace) -> int:
    from .train.recipe import main as train_main

    train_main([a for a in args.rest if a != "--"])
    return 0


COMMANDS["eval"] = ("score a manifest: WER/CER per language, BLEU per direction, RTFx", _add_eval, _run_eval)
COMMANDS["train"] = (
    "run a training recipe stage (tokenizer, lm, encoder, speech, nar)",
    _add_train,
    _run_train,
)


def _add_serve(p: argparse.ArgumentParser) -> None:
    from .server.command import add_arguments

    add_arguments(p)


def _run_serve(args: argparse.Namespace) -> int:
    from .server.command import base_options, serve

    return serve(args, _load(args, base_options(args)))


COMMANDS["serve"] = (
    "OpenAI-compatible speech server with dynamic batching and a web page",
    _add_serve,
    _run_serve,
)
