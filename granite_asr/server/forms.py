"""Multipart form of `POST /v1/audio/{transcriptions,translations}` → `AudioRequest` (or a 400).

Fields follow OpenAI's (PEERS §6.1): `file`, `model` (required; any name is served by the loaded model,
so clients hard-wired to "whisper-1" work), `language`, `prompt`, `response_format`, `temperature`,
`timestamp_granularities[]`, `stream`, `include[]`, `keywords[]`. Array fields are accepted with and
without the literal `[]` (speaches-ai/speaches#29). Granite-specific:

- `prompt` is keyword biasing, not free context: comma-separated words and names become
  `TranscribeOptions.keywords` (PEERS §5.11: Granite's keyword biasing is a selling point, expose it
  everywhere), merged with OpenAI's newer `keywords[]`.
- `to_language` (translations; vLLM's extension) picks a target other than English; `language` there is
  the source.
- `speakers=true` asks a 2b-plus model for speaker turns in any format; `diarized_json` implies it.
- `include[]=srt` / `include[]=vtt` add the subtitle files to a verbose_json answer (the web page
  downloads them without a second decode; the text comes from the same writers as the CLI's).
- `temperature` is accepted in OpenAI's range [0, 1]; decoding is greedy or beam whatever its value.
- `chunking_strategy` is accepted and ignored: long audio is always windowed at VAD pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from ..options import TranscribeOptions
from ..prompts import canonical_language
from ..transcribe.pipeline import make_options
from .errors import bad_request

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("word", "segment")
INCLUDES = ("logprobs", "srt", "vtt")  # logprobs: accepted for OpenAI clients, not returned
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
_UNSUPPORTED = ("known_speaker_names", "known_speaker_references")


@dataclass(frozen=True)
class AudioRequest:
    data: bytes
    filename: str
    model: str
    response_format: str
    options: TranscribeOptions
    stream: bool = False
    segments: bool = True  # verbose_json: include segments[]
    words: bool = False  # verbose_json: include words[]
    files: tuple[str, ...] = ()  # verbose_json extension: subtitle files to include
    warnings: tuple[str, ...] = ()  # sent back in the X-Granite-ASR-Warning header


def _values(form: FormData, name: str) -> list[str]:
    """All values of an array field, sent as `name[]` or `name` (repeated or comma-free single)."""
    out = []
    for key in (f"{name}[]", name):
        for v in form.getlist(key):
            if not isinstance(v, str):
                raise bad_request(f"'{key}' must be a text field", param=key)
            out.append(v.strip())
    return [v for v in out if v]


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a text field, not a file", param=name)
    return value.strip() or None


def _flag(form: FormData, name: str) -> bool:
    value = (_text(form, name) or "").lower()
    if value not in _TRUE + _FALSE:
        raise bad_request(f"'{name}' must be true or false, got {value!r}", param=name)
    return value in _TRUE


def _language(form: FormData, name: str) -> str | None:
    value = _text(form, name)
    try:
        return canonical_language(value)
    except ValueError as e:
        raise bad_request(str(e), param=name) from None


def _temperature(form: FormData) -> None:
    value = _text(form, "temperature")
    if value is None:
        return
    try:
        t = float(value)
    except ValueError:
        raise bad_request(f"temperature must be a number, got {value!r}", param="temperature") from None
    if not 0.0 <= t <= 1.0:
        raise bad_request("temperature must be between 0 and 1", param="temperature")


def _keywords(form: FormData, biasing: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keywords, warnings). On a model without keyword biasing (2b-nar) `prompt` is dropped with a
    warning, as OpenAI's prompt is advisory and clients send it routinely; `keywords[]` is an explicit
    ask, so it stays and the variant check refuses it."""
    prompt = [w.strip() for w in (_text(form, "prompt") or "").split(",")]
    warnings = ()
    if not biasing and any(prompt):
        prompt, warnings = [], ("prompt ignored: this model has no keyword biasing",)
    words = prompt + _values(form, "keywords")
    return tuple(dict.fromkeys(w for w in words if w)), warnings  # order kept, duplicates dropped


async def _upload(form: FormData) -> tuple[bytes, str]:
    upload = form.get("file")
    if upload is None:
        raise bad_request(
            "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    if not isinstance(upload, UploadFile):
        raise bad_request("'file' must be a file upload (multipart/form-data)", param="file")
    data = await upload.read()
    if not data:
        raise bad_request("The audio file is empty.", param="file", code="empty_file")
    return data, upload.filename or "audio"


async def parse_audio_form(
    form: FormData, task: str, base: TranscribeOptions, *, biasing: bool = True
) -> AudioRequest:
    """Validate the form of a transcription (`task="transcribe"`) or translation request.

    biasing: whether the served model does keyword biasing (`VariantPrompts.keywords`).
    """
    for name in _UNSUPPORTED:
        if _values(form, name):
            raise bad_request(f"'{name}[]' is not supported by this server", param=name)
    model = _text(form, "model")
    if model is None:
        raise bad_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    fmt = (_text(form, "response_format") or "json").lower()
    if fmt not in RESPONSE_FORMATS or (task == "translate" and fmt == "diarized_json"):
        allowed = [f for f in RESPONSE_FORMATS if task == "transcribe" or f != "diarized_json"]
        raise bad_request(f"response_format must be one of {', '.join(allowed)}", param="response_format")
    granularities = [g.lower() for g in _values(form, "timestamp_granularities")]
    if any(g not in GRANULARITIES for g in granularities):
        raise bad_request(
            "timestamp_granularities[] takes 'word' and/or 'segment'", param="timestamp_granularities"
        )
    includes = [i.lower() for i in _values(form, "include")]
    if any(i not in INCLUDES for i in includes):
        raise bad_request(f"include[] takes {', '.join(INCLUDES)}", param="include")
    _temperature(form)
    target = _language(form, "to_language")
    if target is not None and task != "translate":
        raise bad_request("to_language is for /v1/audio/translations", param="to_language")
    words = task == "transcribe" and fmt == "verbose_json" and "word" in granularities
    keywords, warnings = _keywords(form, biasing)
    options = make_options(
        base,
        task=task,
        language=_language(form, "language"),
        target_language=target or ("en" if task == "translate" else None),
        keywords=keywords,
        word_timestamps=words,
        speakers=fmt == "diarized_json" or _flag(form, "speakers"),
        progress=False,
    )
    data, filename = await _upload(form)
    return AudioRequest(
        data=data,
        filename=filename,
        model=model,
        response_format=fmt,
        options=options,
        stream=_flag(form, "stream"),
        # Empty granularities mean segments (PEERS §6.1: treat empty as ["segment"]).
        segments=not granularities or "segment" in granularities,
        words=words,
        files=tuple(i for i in includes if i in ("srt", "vtt")),
        warnings=warnings,
    )
