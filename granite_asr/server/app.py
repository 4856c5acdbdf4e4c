"""The FastAPI app: OpenAI's audio endpoints over the batching scheduler, plus health, metrics and the page.

    POST /v1/audio/transcriptions, /v1/audio/translations   (multipart; `forms.py`, `formats.py`)
    GET  /v1/models, /v1/models/{id}, /health, /metrics, /  (the web page, `static/`)

A request's life (issue 5 §3): auth (401) → body read under the upload limit (413) → form checked (400)
→ options checked against the variant before any compute (400) → admitted or refused (429) → audio decoded
in the pool (400 for non-audio or too short) → the long-form pipeline runs in the pool against the
scheduler (`scheduler.py`) → the answer, or 504 after `timeout_s`, or nothing when the client left (its
queued windows are dropped). Every failure is OpenAI-style JSON (`errors.py`); an exception inside one
request is that request's 500, never the server's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..audio.io import AudioError, load_audio
from ..options import TranscribeOptions
from ..prompts import VARIANTS
from ..results import Transcription
from ..transcribe.pipeline import engine_for, transcribe
from . import errors, formats
from .errors import ApiError, UploadTooLarge, bad_request
from .forms import AudioRequest, parse_audio_form
from .metrics import Metrics
from .scheduler import Cancelled, QueueFull, RequestEngine, Scheduler, Ticket

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # OpenAI refuses shorter audio with a 400; so do we
DRAIN_LIMIT = 64 * 2**20  # bytes read past the limit so the client can see the 413 before we hang up
_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/health", "/metrics", "/")
log = logging.getLogger("granite_asr.server")


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "granite-asr"  # the id /v1/models lists; requests may name any model
    api_key: str | None = None
    max_batch: int = 16  # rows (audio windows) per engine call
    max_wait_ms: float = 20.0  # how long the oldest window waits for batch company
    max_queue: int = 256  # requests in flight; more → 429
    max_upload_mb: float = 100.0
    timeout_s: float = 600.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class ServerState:
    """What the routes share: the engine, its scheduler, the pool for pipelines, metrics, options."""

    def __init__(self, model_or_engine, config: ServerConfig, base: TranscribeOptions):
        self.engine = engine_for(model_or_engine)
        self.config, self.base, self.metrics = config, base.replace(progress=False), Metrics()
        self.scheduler = Scheduler(
            self.engine,
            max_batch=config.max_batch,
            max_wait=config.max_wait_ms / 1000,
            max_queue=config.max_queue,
            metrics=self.metrics,
        )
        # Pipeline threads mostly wait for the engine; enough of them to fill batches from many requests.
        workers = max(4, min(config.max_queue, 4 * config.max_batch))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="granite-asr-request")
        self.created = int(time.time())

    def start_pipeline(self, audio: np.ndarray, options: TranscribeOptions, ticket: Ticket) -> asyncio.Future:
        """Run the long-form pipeline for one request in the pool; the ticket is released when it ends."""
        engine = RequestEngine(self.scheduler, ticket)
        job = self.pool.submit(transcribe, engine, audio, options=options)
        job.add_done_callback(lambda _: self.scheduler.release(ticket))
        fut = asyncio.wrap_future(job)
        fut.add_done_callback(_retrieve)
        return fut


def _retrieve(fut: asyncio.Future) -> None:
    """Mark the outcome as seen: a request that was given up on must not log "exception never retrieved"."""
    if not fut.cancelled():
        fut.exception()


# ------------------------------------------------------------------------------------------ ASGI layers


class UploadLimit:
    """Refuse bodies over the limit with a 413, whether declared (Content-Length) or chunked.

    The check sits in the body reader, so the multipart parser never buffers more than the limit; the
    rest is read and thrown away (up to `DRAIN_LIMIT`) so that clients which send the whole body before
    reading the answer get the 413 instead of a reset connection.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"0")
        declared = int(declared) if declared.isdigit() else 0
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if declared > self.max_bytes or received > self.max_bytes:
                while message.get("more_body") and received < self.max_bytes + DRAIN_LIMIT:
                    message = await receive()
                    received += len(message.get("body", b""))
                raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class RequestCounter:
    """`requests_total{route, status}`; 499 when the client left before any answer was sent."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [499]

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            status[0] = 500  # answered by Starlette's outermost error middleware, after this one
            raise
        finally:
            path = scope["path"]
            route = path if path in _ROUTES else "/static" if path.startswith("/static/") else "other"
            route = "/v1/models" if path.startswith("/v1/models/") else route
            self.metrics.inc("requests_total", route=route, status=str(status[0]))


# ------------------------------------------------------------------------------------------ audio requests


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def _authorize(request: Request) -> None:
    key = request.app.state.granite.config.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    if not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


def _decode(spec: AudioRequest) -> np.ndarray:
    data = io.BytesIO(spec.data)
    data.name = spec.filename  # errors name the upload, and its extension helps pick the decoder
    try:
        audio = load_audio(data)
    except AudioError as e:
        log.info("undecodable upload %r: %s", spec.filename, e.problem)
        problem = e.problem.split(" (", 1)[0]  # the decoders' details name internal objects: log only
        raise bad_request(
            f"Invalid file format: {problem}. Supported formats: flac, m4a, mp3, mp4, mpeg, mpga, oga, "
            "ogg, wav, webm.",
            param="file",
            code="invalid_file_format",
        ) from None
    if len(audio) < MIN_SECONDS * SAMPLE_RATE:
        raise bad_request(
            f"Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds.",
            param="file",
            code="audio_too_short",
        )
    return audio


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait(request: Request, fut: asyncio.Future, ticket: Ticket, timeout: float) -> Transcription:
    """The pipeline's result; cancels the ticket when the client leaves (ClientGone) or time is up (504)."""
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({fut, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if fut in done:
        return fut.result()
    ticket.cancel()
    if gone in done:
        raise ClientGone
    raise _timeout(timeout)


def _timeout(timeout: float) -> ApiError:
    return ApiError(504, f"Request timed out after {timeout:g} s.", code="timeout")


async def _events(state: ServerState, fut: asyncio.Future, ticket: Ticket, spec: AudioRequest, started):
    """SSE body. Errors after the headers went out travel as an `{"error": ...}` event."""
    try:
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), state.config.timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            ticket.cancel()
            yield formats.sse(_timeout(state.config.timeout_s).body())
            return
        except Exception as e:  # noqa: BLE001 (reported to the client, the server goes on)
            log.exception("streamed request failed")
            yield formats.sse(ApiError(500, f"{type(e).__name__}: {e}", code="internal_error").body())
            return
        _record(state, result, started)
        for event in formats.stream_events(result, spec.response_format):
            yield formats.sse(event)
    finally:
        if not fut.done():
            ticket.cancel()  # the client went away mid-stream: drop its queued windows


def _record(state: ServerState, result: Transcription, started: float) -> None:
    state.metrics.inc("audio_seconds_total", result.duration)
    state.metrics.observe("request_seconds", time.perf_counter() - started)


def _respond(result: Transcription, spec: AudioRequest) -> Response:
    body = formats.body_for(
        result, spec.response_format, segments=spec.segments, words=spec.words, files=spec.files
    )
    headers = {"X-Granite-ASR-Warning": "; ".join(spec.warnings)} if spec.warnings else None
    if isinstance(body, dict):
        return JSONResponse(body, headers=headers)
    return PlainTextResponse(body, media_type=formats.MEDIA_TYPES[spec.response_format], headers=headers)


async def _audio(request: Request, task: str) -> Response:
    state: ServerState = request.app.state.granite
    form = await request.form(max_files=1, max_fields=64)
    try:
        spec = await parse_audio_form(form, task, state.base, biasing=VARIANTS[state.engine.variant].keywords)
    finally:
        await form.close()
    try:
        state.engine.check(spec.options)  # what this variant cannot do fails before any compute
    except ValueError as e:
        raise bad_request(str(e), code="unsupported_value") from None
    try:
        ticket = state.scheduler.admit()
    except QueueFull as e:
        raise ApiError(429, f"{e}; retry later.", code="queue_full", headers={"Retry-After": "1"}) from None
    started = time.perf_counter()
    try:
        audio = await asyncio.get_running_loop().run_in_executor(state.pool, _decode, spec)
        fut = state.start_pipeline(audio, spec.options, ticket)
    except BaseException:
        state.scheduler.release(ticket)
        raise
    if spec.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        events = _events(state, fut, ticket, spec, started)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        result = await _wait(request, fut, ticket, state.config.timeout_s)
    except ClientGone:
        return Response(status_code=499)
    except Cancelled:
        raise ApiError(503, "The server is shutting down.", code="shutting_down") from None
    _record(state, result, started)
    return _respond(result, spec)


# ------------------------------------------------------------------------------------------ the app


def _models(state: ServerState) -> list[dict]:
    spec = VARIANTS[state.engine.variant]
    return [
        {
            "id": state.config.model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "granite-asr",
            # Extension: what the web page offers in its menus.
            "granite_asr": {
                "variant": state.engine.variant,
                "languages": sorted(spec.asr_languages),
                "translation": sorted(f"{s}->{t}" for s, t in spec.translation_pairs),
                "speakers": spec.speakers_and_timestamps,
                "keywords": spec.keywords,
            },
        }
    ]


def _api_router() -> APIRouter:
    api = APIRouter(prefix="/v1", dependencies=[Depends(_authorize)])

    @api.post("/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _audio(request, "transcribe")

    @api.post("/audio/translations")
    async def translations(request: Request) -> Response:
        return await _audio(request, "translate")

    @api.get("/models")
    async def models(request: Request) -> dict:
        return {"object": "list", "data": _models(request.app.state.granite)}

    @api.get("/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> dict:
        for m in _models(request.app.state.granite):
            if m["id"] == model_id:
                return m
        raise ApiError(404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found")

    return api


def create_app(model_or_engine, config: ServerConfig | None = None, base: TranscribeOptions | None = None):
    """The ASGI app serving `model_or_engine` (a loaded model or an Engine)."""
    config = config or ServerConfig()
    state = ServerState(model_or_engine, config, base or TranscribeOptions())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..transcribe.vad import silero_available

        silero_available()  # load the VAD once, before concurrent requests race to do it
        state.scheduler.start()
        yield
        state.scheduler.stop()
        state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="granite-asr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.granite = state
    errors.install(app)
    app.include_router(_api_router())

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = state.scheduler.alive
        body = {"status": "ok" if ok else "engine worker stopped", "model": config.model_name}
        body |= {"variant": state.engine.variant, "queue_depth": state.scheduler.in_flight}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(UploadLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(RequestCounter, metrics=state.metrics)
    return app
