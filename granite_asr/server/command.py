"""`granite-asr serve`: flags, and uvicorn around `create_app` (issue 5 §1).

    granite-asr serve [--model M] [--host 127.0.0.1] [--port 8000] [--api-key K] [--max-batch N]
                      [--max-wait-ms W] [--max-queue Q] [--max-upload-mb S] [--timeout-s T]
                      [--mode M] [--max-new-tokens N] [--no-vad] [--device D] [--dtype T]

`cli.py` registers the subcommand and loads the model with its shared loader (variant checks, device and
dtype, one-line errors, exit code 2); this module imports neither FastAPI nor uvicorn until `serve` runs,
so the other subcommands work without the `server` extra.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..options import MODES

API_KEY_ENV = "GRANITE_ASR_API_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="checkpoint directory or hub id (default: the embedded model)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${API_KEY_ENV}, else no auth)",
    )
    p.add_argument("--served-model-name", default=None, help="model id listed by /v1/models")
    p.add_argument("--max-batch", type=int, default=16, help="audio windows per engine call")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a window waits for company")
    p.add_argument("--max-queue", type=int, default=256, help="requests in flight before 429")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload (413 above)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per-request time limit (504 after)")
    p.add_argument("--mode", default="auto", choices=MODES, help="decoding mode for every request")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per window (default 448; 2b-plus timestamps: at least 60 per second of audio)",
    )
    p.add_argument(
        "--vad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Silero VAD speech gating of long audio (--no-vad: everything above digital silence)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, … (default: cuda if available)")
    from ..cli import (  # cli.py is fully imported by the time it builds its parser
        _DTYPES,
        add_char_ctc_arguments,
        add_quantize_argument,
    )

    p.add_argument(
        "--dtype", default=None, choices=sorted(_DTYPES), help="weights dtype (default: per device)"
    )
    add_quantize_argument(p)
    add_char_ctc_arguments(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def base_options(args: argparse.Namespace):
    """The server-wide options every request starts from (its form fields go on top)."""
    from ..transcribe.pipeline import make_options

    extra = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
    return make_options(
        mode=args.mode,
        beam_size=args.beam_size,
        word_lm=args.word_lm,
        ctc_tempo=args.ctc_tempo,
        vad=args.vad,
        progress=False,
        **extra,
    )


def served_name(args: argparse.Namespace) -> str:
    if args.served_model_name:
        return args.served_model_name
    return Path(str(args.model).rstrip("/")).name if args.model else "granite-asr"


def serve(args: argparse.Namespace, model) -> int:
    """Run the server on `model` (already loaded) until interrupted."""
    try:
        import uvicorn

        from .app import ServerConfig, create_app
    except ImportError as e:
        from ..cli import CLIError

        raise CLIError(f"error: the server needs its extra: pip install 'granite-asr[server]' ({e})") from e
    config = ServerConfig(
        model_name=served_name(args),
        api_key=args.api_key or None,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        timeout_s=args.timeout_s,
    )
    try:
        app = create_app(model, config, base_options(args))
    except ValueError as e:  # --max-batch 0 and the like
        from ..cli import CLIError

        raise CLIError(f"error: {e}") from e
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
