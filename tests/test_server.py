"""`granite-asr serve` end to end (issue 5 "Done when"): the real server in a subprocess on loopback, a tiny
random checkpoint with a real tokenizer, the official `openai` client for the happy paths and a bad key,
raw HTTP (httpx) for the error cases, backpressure, cancellation and /metrics.

Tiny random models write junk, so the tests check structure, formats (srt parsed with `srt`, vtt with
`webvtt`), status codes and OpenAI's JSON shapes, never words. One server serves the module: max queue 4
and a 300 ms batching wait make "queue full" deterministic (4 admitted requests wait for company that
never comes, the others are refused) and make concurrent requests share batches. A second, short-lived
server checks the 504 path. The scheduler is also driven in-process with the real engine, to check that
windows of different requests share a call, that options keep calls apart, that a cancelled request's
windows are dropped and that one failing request does not fail its batch neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
import time

import numpy as np
import pytest
import soundfile as sf
import torch

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from granite_asr.engine.engine import Engine  # noqa: E402
from granite_asr.model.checkpoint import save_pretrained  # noqa: E402
from granite_asr.options import DecodeOptions, TranscribeOptions  # noqa: E402
from granite_asr.results import Segment, Transcription, Word  # noqa: E402
from granite_asr.server import formats  # noqa: E402
from granite_asr.server.loopback import loopback_server  # noqa: E402
from granite_asr.server.metrics import Metrics  # noqa: E402
from granite_asr.server.metrics import parse as parse_metrics  # noqa: E402
from granite_asr.server.scheduler import Cancelled, Scheduler  # noqa: E402

from .helpers_model import build_tiny  # noqa: E402

SR = 16000
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OPENAI_SEGMENT_KEYS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob"}
OPENAI_SEGMENT_KEYS |= {"compression_ratio", "no_speech_prob"}


# ------------------------------------------------------------------------------------------ helpers


def wav_bytes(seconds: float = 2.0, seed: int = 0) -> bytes:
    """A 16-bit WAV chirp (speech-free, but loud: the server runs with --no-vad so it is transcribed)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 200 + 100 * seed
    x = 0.3 * np.sin(2 * np.pi * (f0 + 150 * t) * t)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@contextlib.contextmanager
def run_server(checkpoint, *flags: str):
    """`python -m granite_asr serve` on a free loopback port → its base URL; stopped on exit."""
    args = ["--model", str(checkpoint), "--no-vad", "--max-new-tokens", "8", "--log-level", "warning", *flags]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the machine is shared
    with tempfile.TemporaryFile("w+") as log:
        with loopback_server(args, env=env, log=log, ready_timeout=300) as url:
            yield url
        log.seek(0)
        output = log.read()
    # A traceback in the log means some request crashed inside the server, even if it answered.
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-asr"
    save_pretrained(build_tiny("tiny"), path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint):
    flags = ["--api-key", API_KEY, "--max-queue", "4", "--max-batch", "8", "--max-wait-ms", "300"]
    flags += ["--max-upload-mb", "0.25", "--timeout-s", "60"]
    with run_server(checkpoint, *flags) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(api_key=API_KEY, base_url=f"{server}/v1", max_retries=0, timeout=60)


def post(
    server: str, files=None, data=None, headers=AUTH, path="transcriptions", timeout=60
) -> httpx.Response:
    return httpx.post(f"{server}/v1/audio/{path}", files=files, data=data, headers=headers, timeout=timeout)


def metrics(server: str) -> dict[str, float]:
    return parse_metrics(httpx.get(f"{server}/metrics", timeout=10).text)


def multi_row_batches(m: dict[str, float]) -> float:
    """Engine batches of more than one row: all batches − those in the histogram's le="1" bucket."""
    return m.get("granite_asr_batch_size_count", 0) - m.get('granite_asr_batch_size_bucket{le="1"}', 0)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# ------------------------------------------------------------------------------------------ openai client


def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-asr"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["variant"] == "ar"


def test_transcription_json(client):
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes()))
    assert isinstance(result.text, str)
    assert result.usage.type == "duration" and result.usage.seconds == pytest.approx(2.0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks translations deprecated
def test_translation_default_english_and_to_language(client):
    result = client.audio.translations.create(
        model="tiny-asr", file=("a.wav", wav_bytes()), response_format="verbose_json"
    )
    assert result.task == "translate" and result.language == "english"
    result = client.audio.translations.create(
        model="tiny-asr",
        file=("a.wav", wav_bytes()),
        response_format="verbose_json",
        extra_body={"to_language": "fr", "language": "en"},
    )
    assert result.language == "french" and isinstance(result.text, str)


def test_verbose_json_words_and_segments(client):
    result = client.audio.transcriptions.create(
        model="tiny-asr",
        file=("a.wav", wav_bytes(3.0)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        prompt="Granite, Kubernetes",  # keyword biasing
    )
    body = result.model_dump()
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["duration"] == pytest.approx(3.0)
    assert body["segments"] and body["words"], "the tiny model writes something on a loud chirp"
    for seg in body["segments"]:
        assert set(seg) >= OPENAI_SEGMENT_KEYS
        assert 0 <= seg["start"] <= seg["end"] <= 3.0 + 1e-3
    for w in body["words"]:
        assert set(w) >= {"word", "start", "end"} and 0 <= w["start"] <= w["end"] <= 3.0 + 1e-3


def test_srt_and_vtt(client):
    srt = pytest.importorskip("srt")
    webvtt = pytest.importorskip("webvtt")
    text = client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes()), response_format="srt")
    cues = list(srt.parse(text))
    assert cues and all(c.start <= c.end for c in cues)
    text = client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes()), response_format="vtt")
    assert text.startswith("WEBVTT") and len(webvtt.from_string(text).captions) == len(cues)
    text = client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes()), response_format="text")
    assert isinstance(text, str)


def test_streaming(client):
    stream = client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes()), stream=True)
    events = list(stream)
    assert events[-1].type == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert "".join(deltas) == events[-1].text


def test_bad_api_key(server):
    bad = openai.OpenAI(api_key="wrong", base_url=f"{server}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes()))
    r = post(server, files={"file": ("a.wav", wav_bytes())}, data={"model": "m"}, headers={})
    assert_openai_error(r, 401)


# ------------------------------------------------------------------------------------------ errors


def test_error_cases_then_still_serving(server):
    wav = ("a.wav", wav_bytes())
    assert_openai_error(
        post(server, files={"file": ("x.wav", b"not audio at all")}, data={"model": "m"}), 400, "file"
    )
    assert_openai_error(post(server, files={"file": ("x.wav", b"")}, data={"model": "m"}), 400, "file")
    big = b"RIFF" + os.urandom(1 << 20)  # 1 MiB > --max-upload-mb 0.25
    assert_openai_error(post(server, files={"file": ("big.wav", big)}, data={"model": "m"}), 413, "file")
    assert_openai_error(post(server, data={"model": "m"}), 400, "file")  # missing file
    assert_openai_error(post(server, files={"file": wav}), 400, "model")  # missing model
    bad_format = {"model": "m", "response_format": "docx"}
    assert_openai_error(post(server, files={"file": wav}, data=bad_format), 400, "response_format")
    assert_openai_error(
        post(server, files={"file": wav}, data={"model": "m", "language": "xx"}), 400, "language"
    )
    hot = {"model": "m", "temperature": "3"}
    assert_openai_error(post(server, files={"file": wav}, data=hot), 400, "temperature")
    # Speakers need a 2b-plus model: refused before any compute, with the reason.
    error = assert_openai_error(
        post(server, files={"file": wav}, data={"model": "m", "response_format": "diarized_json"}), 400
    )
    assert "speaker" in error["message"].lower() or "plus" in error["message"].lower()
    short = ("s.wav", wav_bytes(0.05))
    assert_openai_error(post(server, files={"file": short}, data={"model": "m"}), 400, "file")
    assert_openai_error(httpx.get(f"{server}/v1/nothing", headers=AUTH), 404)
    assert httpx.get(f"{server}/health").status_code == 200
    assert post(server, files={"file": wav}, data={"model": "m"}).status_code == 200


async def _burst(server: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
        jobs = [
            http.post(
                f"{server}/v1/audio/transcriptions",
                files={"file": ("a.wav", wav_bytes(1.0, k))},
                data={"model": "m"},
            )
            for k in range(n)
        ]
        return await asyncio.gather(*jobs)


def test_queue_full_then_batches_and_health(server):
    before = metrics(server)
    responses = asyncio.run(_burst(server, 10))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 2 and 429 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert_openai_error(refused, 429)
    assert refused.headers.get("retry-after") == "1"
    after = metrics(server)
    assert multi_row_batches(after) > multi_row_batches(before), "concurrent requests should share batches"
    assert after['granite_asr_requests_total{route="/v1/audio/transcriptions",status="429"}'] >= 1
    assert after["granite_asr_queue_depth"] == 0
    assert httpx.get(f"{server}/health").status_code == 200


def test_client_disconnect_drops_queued_work(server):
    before = metrics(server).get("granite_asr_dropped_windows_total", 0)
    # The server holds a lone request's window 300 ms for company; the client gives up after 100 ms.
    with pytest.raises(httpx.ReadTimeout):
        post(
            server,
            files={"file": ("a.wav", wav_bytes())},
            data={"model": "m"},
            timeout=httpx.Timeout(10, read=0.1),
        )
    deadline = time.monotonic() + 5
    while metrics(server).get("granite_asr_dropped_windows_total", 0) <= before:
        assert time.monotonic() < deadline, "the abandoned request's window was not dropped"
        time.sleep(0.1)
    key = 'granite_asr_requests_total{route="/v1/audio/transcriptions",status="499"}'
    while metrics(server).get(key, 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{server}/health").status_code == 200


def test_metrics_text_and_page(server):
    text = httpx.get(f"{server}/metrics").text
    for name in ("queue_depth", "batch_size_bucket", "audio_seconds_total", "requests_total", "rtfx"):
        assert f"granite_asr_{name}" in text
    assert metrics(server)["granite_asr_audio_seconds_total"] > 0
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server}/static/{asset}").status_code == 200


# ------------------------------------------------------------------------------------------ formats (no server)


def test_diarized_json_letters_and_stream_deltas():
    words = (Word(" hi", 0.0, 0.4, speaker="Speaker 2"),)
    segs = (
        Segment(0, 0.0, 0.4, " hi", words=words, speaker="Speaker 2"),
        Segment(1, 0.5, 1.0, "there", speaker=None),
        Segment(2, 1.2, 2.0, "bye.", speaker="Speaker 1"),
    )
    result = Transcription(text="hi there bye.", language="en", segments=segs, duration=2.0)
    body = formats.diarized_body(result)
    assert body["task"] == "transcribe" and body["usage"] == {"type": "duration", "seconds": 2.0}
    assert [s["speaker"] for s in body["segments"]] == ["A", "A", "B"]
    assert {"type", "id", "start", "end", "text", "speaker"} == set(body["segments"][0])
    assert body["segments"][0]["type"] == "transcript.text.segment"
    events = formats.stream_events(result, "diarized_json")
    assert [e["type"] for e in events][:3] == ["transcript.text.segment"] * 3
    assert "".join(e["delta"] for e in events if e["type"] == "transcript.text.delta") == result.text
    verbose = formats.verbose_body(result, segments=True, words=True)
    assert verbose["words"] == [{"word": "hi", "start": 0.0, "end": 0.4, "speaker": "Speaker 2"}]
    assert "words" not in verbose["segments"][0] and verbose["language"] == "english"


def test_timeout_answers_504_and_frees_the_slot(checkpoint):
    # A lone request waits 2 s for batch company, past its 0.3 s limit.
    with run_server(checkpoint, "--timeout-s", "0.3", "--max-wait-ms", "2000") as url:
        r = post(url, files={"file": ("a.wav", wav_bytes())}, data={"model": "m"}, headers={})
        assert_openai_error(r, 504)
        deadline = time.monotonic() + 5
        while metrics(url)["granite_asr_queue_depth"] != 0:  # released once the pipeline thread ends
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(f"{url}/health").status_code == 200


# ------------------------------------------------------------------------------------------ scheduler


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    return Engine(build_tiny("tiny"))


def clip(seconds: float, seed: int) -> np.ndarray:
    return sf.read(io.BytesIO(wav_bytes(seconds, seed)), dtype="float32")[0]


def test_scheduler_shares_batches_across_requests_and_isolates_failures(engine):
    options = TranscribeOptions(progress=False, decode=DecodeOptions(max_new_tokens=6))
    m = Metrics()
    s = Scheduler(engine, max_batch=8, max_wait=0.05, max_queue=8, metrics=m)
    long_req, short_req, french, bad, gone = (s.admit() for _ in range(5))
    windows = [clip(1.0, k) for k in range(3)]  # one long request's windows
    futures = {
        "long": s.submit(windows, options, long_req),
        "short": s.submit(
            [clip(0.7, 5)], options.replace(word_timestamps=True), short_req
        ),  # same engine key
        "french": s.submit([clip(0.7, 6)], options.replace(language="fr"), french),  # another key
        "bad": s.submit([np.full(8000, np.nan, np.float32)], options, bad),  # the engine refuses NaN
        "gone": s.submit([clip(0.5, 7)], options, gone),
    }
    gone.cancel()  # client left before the worker started: its window is dropped
    s.start()
    try:
        results = {k: f.exception(timeout=60) or f.result() for k, f in futures.items()}
    finally:
        s.stop()
    assert isinstance(results["gone"], Cancelled) and isinstance(results["bad"], ValueError)
    # Rows decoded together give what each request gets alone (the engine is batch-invariant).
    alone = engine.run(windows + [clip(0.7, 5)], options)
    assert [r.tokens for r in results["long"] + results["short"]] == [r.tokens for r in alone]
    assert len(results["french"]) == 1
    text = m.render()
    assert "granite_asr_dropped_windows_total 1" in text
    # long + short + bad shared one dispatch (5 rows; retried per request after the NaN failure),
    # french ran in its own: so some dispatch had more than one row.
    assert (
        parse_metrics(text)['granite_asr_dispatch_rows_bucket{le="1"}']
        < parse_metrics(text)["granite_asr_dispatch_rows_count"]
    )
