"""`granite-asr` (also `python -m granite_asr`): a thin command line over `transcribe` and the writers.

    granite-asr transcribe FILES... [--model M] [--language L] [--format txt|json|srt|vtt|tsv|all]
                           [--output-dir D] [--word-timestamps] [--speakers] [--model-timestamps]
                           [--mode M] [--beam-size N] [--word-lm auto|none|DIR] [--batch-size N] [--device D] [--dtype T] [--quantize int8]
                           [--keywords K]
    granite-asr translate FILES... --to LANG [--from LANG] [...]
    granite-asr info [MODEL]
    granite-asr transcribe-corpus INPUT OUTPUT [--format F]... [--ray | --ray-address A] [...]

`-` reads audio bytes from standard input. Without `--output-dir` the transcript goes to stdout (txt, or
the one `--format` asked for); with it, `<dir>/<stem>.<ext>` per input (`out/talk.srt` for `talk.mp3`),
every format by default, as Whisper does (PEERS §6.3). A file that fails gets one line on stderr naming
it and the problem, the others go on; exit code 1 if any file failed, 2 for a fatal error (bad
arguments, a model that cannot load, a task the variant cannot do), 0 otherwise (IBM's convention,
PEERS §6.3).

Subcommands live in `COMMANDS` (name → (help, add_arguments, run)), so `serve`, `eval`, `bench`, … plug in
without touching the dispatcher: the job commands (`transcribe-corpus`, `eval`, `train`, `serve`) register
themselves from `cli_jobs.py`; the server itself lives in `granite_asr/server/`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .options import MODES, DecodeOptions

SubcommandRun = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], SubcommandRun]] = {}
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES |= {"float16": "float16", "fp16": "float16"}


class CLIError(Exception):
    """A fatal error: printed as one line, exit code 2."""


def _err(message: str) -> None:
    print(f"granite-asr: {message}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _err(f"warning: {message}")  # one line, without Python's source location


# ------------------------------------------------------------------------------------------ arguments


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --quantize: shared by every command that loads a model."""
    p.add_argument(
        "--model", default=None, help="checkpoint directory or hub id (default: the embedded model)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, … (default: cuda if available)")
    p.add_argument(
        "--dtype", default=None, choices=sorted(_DTYPES), help="weights dtype (default: per device)"
    )
    add_quantize_argument(p)


def add_quantize_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="int8 weights (CPU only): faster decoding of large models; accuracy cost in bench/RESULTS.md",
    )


def add_char_ctc_arguments(p: argparse.ArgumentParser) -> None:
    """`--word-lm` and `--ctc-tempo` (`DecodeOptions.word_lm`, `.ctc_tempo`): shared by transcribe,
    translate, transcribe-corpus, eval, serve."""
    p.add_argument(
        "--word-lm", default="auto", metavar="auto|none|DIR",
        help="char-CTC transcription: search with the bundled lexicon + word LM (auto), keep the greedy "
        "spelling (none), or use DIR's <lang>.tsv.gz word LMs (granite-asr train wordlm)",
    )  # fmt: skip
    p.add_argument(
        "--ctc-tempo", type=float, default=DecodeOptions.ctc_tempo, metavar="X",
        help="char-CTC transcription: encode a clip whose char head labels most frames again from log-mel "
        f"stretched X times (default {DecodeOptions.ctc_tempo}; 1 turns it off)",
    )  # fmt: skip


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """How to decode (the `TranscribeOptions` fields `_options` reads): shared by transcribe, translate and
    transcribe-corpus."""
    p.add_argument("--word-timestamps", action="store_true", help="word times and confidences")
    p.add_argument("--mode", default="auto", choices=MODES)
    p.add_argument("--beam-size", type=int, default=1)
    add_char_ctc_arguments(p)
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: auto)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per window (default 448; 2b-plus timestamps: at least 60 per second of audio)",
    )
    p.add_argument(
        "--keywords", action="append", default=None, help="comma-separated words to bias towards (repeatable)"
    )
    p.add_argument("--chunk-seconds", type=float, default=None, help="longest window handed to the model")
    p.add_argument(
        "--vad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Silero VAD speech gating (--no-vad: transcribe everything above digital silence)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audio/video files; '-' reads standard input")
    add_model_arguments(p)
    p.add_argument(
        "--format",
        "-f",
        default=None,
        choices=["txt", "json", "srt", "vtt", "tsv", "all"],
        help="output format (default: txt on stdout, all with --output-dir)",
    )
    p.add_argument("--output-dir", "-o", default=None, help="write <dir>/<name>.<ext> per input")
    add_decoding_arguments(p)


def _add_transcribe(p: argparse.ArgumentParser) -> None:
    _add_decode_args(p)
    p.add_argument("--language", default=None, help="spoken language (en, fr, de, es, pt, ja)")
    p.add_argument("--speakers", action="store_true", help="speaker turns (2b-plus)")
    p.add_argument(
        "--model-timestamps", action="store_true",
        help="2b-plus: word times from the model's [T:cs] tags instead of CTC alignment (implies --word-timestamps)",
    )  # fmt: skip


def _add_translate(p: argparse.ArgumentParser) -> None:
    _add_decode_args(p)
    p.add_argument("--to", dest="target_language", default="en", help="target language (default: en)")
    p.add_argument("--from", dest="language", default=None, help="source language")


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", nargs="?", default=None, help="checkpoint directory or hub id (default: embedded)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ------------------------------------------------------------------------------------------ running


def _options(args: argparse.Namespace, task: str):
    from .transcribe.pipeline import make_options

    keywords = [k.strip() for group in args.keywords or () for k in group.split(",") if k.strip()]
    extra = {
        k: v
        for k, v in (("max_new_tokens", args.max_new_tokens), ("chunk_seconds", args.chunk_seconds))
        if v is not None
    }
    return make_options(
        task=task,
        language=args.language,
        target_language=getattr(args, "target_language", None) if task == "translate" else None,
        keywords=tuple(keywords),
        word_timestamps=args.word_timestamps,
        speakers=getattr(args, "speakers", False),
        model_timestamps=getattr(args, "model_timestamps", False),
        mode=args.mode,
        beam_size=args.beam_size,
        word_lm=args.word_lm,
        ctc_tempo=args.ctc_tempo,
        batch_size=args.batch_size,
        vad=args.vad,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        **extra,
    )


def _check_variant(model: str | None, options) -> None:
    """Options against the checkpoint's variant, from its config alone (no weights read)."""
    variant = _checkpoint_summary(model)["variant"]
    try:
        options.validate(variant)
    except ValueError as e:
        raise CLIError(f"error: {e}") from e


def _load(args: argparse.Namespace, options):
    """Validate against the checkpoint's variant (cheap, before the weights), then load the model."""
    import torch

    from .api import load_model
    from .transcribe.pipeline import engine_for

    _check_variant(args.model, options)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, _DTYPES[args.dtype]) if args.dtype else None
    try:
        model = load_model(args.model, device=device, dtype=dtype, quantize=args.quantize)
    except (OSError, RuntimeError, ValueError) as e:  # CheckpointError is a RuntimeError
        raise CLIError(f"error: cannot load model {args.model or 'embedded default'}: {e}") from e
    try:  # the engine's own checks (a mode this checkpoint lacks, …), still before any audio is read
        engine_for(model).check(options)
    except ValueError as e:
        raise CLIError(f"error: {e}") from e
    return model


def _stdin() -> io.BytesIO:
    """Standard input's bytes, named "<stdin>" so errors and output files (stdin.*) can say where from."""
    data = io.BytesIO(sys.stdin.buffer.read())
    data.name = "<stdin>"
    return data


def _inputs(files: list[str]) -> list:
    return [_stdin() if f == "-" else f for f in files]


def _emit(results, args: argparse.Namespace) -> int:
    from .transcribe.writers import WRITERS, output_stem, write_result

    failed, stems = 0, set()
    fmt = args.format or ("all" if args.output_dir else "txt")
    for i, (name, res) in enumerate(zip(args.files, results, strict=True)):
        if res.error is not None:
            failed += 1
            problem = res.error.split(": ", 1)[1] if res.error.startswith(f"{res.source}: ") else res.error
            _err(f"error: {name}: {problem}")
            continue
        if args.output_dir is None and fmt != "all":
            WRITERS[fmt](res, sys.stdout)
            continue
        stem, k = output_stem(name if name != "-" else "<stdin>", i), 1
        while stem in stems:  # two inputs named talk.* must not overwrite each other
            k += 1
            stem = f"{output_stem(name, i)}_{k}"
        stems.add(stem)
        write_result(res, args.output_dir or ".", fmt, stem=stem)
    sys.stdout.flush()
    return 1 if failed else 0


def _run_task(args: argparse.Namespace, task: str) -> int:
    from .transcribe.pipeline import transcribe

    try:
        options = _options(args, task)
    except (TypeError, ValueError) as e:
        raise CLIError(f"error: {e}") from e
    model = _load(args, options)
    results = transcribe(model, _inputs(args.files), options=options)
    return _emit(results, args)


def _file_shapes(directory: Path) -> dict[str, tuple]:
    """Tensor shapes from safetensors headers (no weights)."""
    from safetensors import safe_open

    from .model.checkpoint import BPE_FILE, BPE_PREFIX, normalize_key

    shapes = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                name = BPE_PREFIX + key if file.name == BPE_FILE else normalize_key(key)
                shapes[name] = tuple(f.get_slice(key).get_shape())
    return shapes


def _checkpoint_summary(model: str | None) -> dict:
    """Variant, parameter counts and capabilities from config.json and safetensors headers (no weights)."""
    import torch

    from .api import resolve_embedded
    from .model.build import build_model
    from .model.checkpoint import CheckpointError, base_dir, lends, read_config, resolve_checkpoint_dir
    from .prompts import VARIANTS

    try:
        directory = Path(resolve_checkpoint_dir(resolve_embedded(model)))
        shapes = _file_shapes(directory)
        config = read_config(directory, shapes)
        base = base_dir(directory)
        if base is not None:  # a sibling: count the tensors its base lends it (`checkpoint.base_state`)
            with torch.device("meta"):
                wanted = build_model(config).state_dict()
            while base is not None:
                for k, shape in _file_shapes(base).items():
                    if lends(k) and k in wanted:
                        shapes.setdefault(k, shape)
                base = base_dir(base)
    except (CheckpointError, OSError) as e:
        raise CLIError(f"error: cannot read model {model or 'embedded default'}: {e}") from e
    count = {}
    for name, shape in shapes.items():
        part = name.split(".")[0]
        n = 1
        for d in shape:
            n *= d
        count[part] = count.get(part, 0) + n
    spec = VARIANTS[config.variant]
    tasks = ["transcribe"] + (["translate"] if spec.translation_pairs else [])
    tasks += ["speakers", "word_timestamps(tags)"] if spec.speakers_and_timestamps else []
    return {
        "model": str(directory),
        "variant": config.variant,
        "parameters": {**count, "total": sum(count.values())},
        "languages": sorted(spec.asr_languages),
        "translation": sorted(f"{s}->{t}" for s, t in spec.translation_pairs),
        "tasks": tasks,
        "keywords": spec.keywords,
        "encoder_frame_seconds": config.features.hop_length
        * config.frames_stacked
        / config.features.sample_rate,
    }


def _run_info(args: argparse.Namespace) -> int:
    info = _checkpoint_summary(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    params = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in info["parameters"].items())
    print(f"model:       {info['model']}")
    print(f"variant:     {info['variant']}")
    print(f"parameters:  {params}")
    print(f"languages:   {', '.join(info['languages'])}")
    print(f"tasks:       {', '.join(info['tasks'])}")
    if info["translation"]:
        print(f"translation: {', '.join(info['translation'])}")
    print(f"keywords:    {'yes' if info['keywords'] else 'no'}")
    return 0


COMMANDS["transcribe"] = ("transcribe audio files", _add_transcribe, lambda a: _run_task(a, "transcribe"))
COMMANDS["translate"] = (
    "translate speech into another language (2b)",
    _add_translate,
    lambda a: _run_task(a, "translate"),
)
COMMANDS["info"] = ("describe a model: variant, sizes, languages, tasks", _add_info, _run_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="granite-asr", description="IBM Granite Speech 4.1 in plain PyTorch"
    )
    from . import cli_jobs  # noqa: F401  (registers transcribe-corpus, eval, train, serve)

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except CLIError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
