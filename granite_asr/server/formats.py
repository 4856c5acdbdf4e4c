"""`Transcription` → OpenAI response bodies and SSE events (PEERS §6.1; PEERS §5.8 lists the gaps other
servers left: verbose_json missing, srt rejected, `words` missing).

- json: `{"text", "usage"}`; text: the transcript (one line per speaker turn when speakers are known).
- srt / vtt: the CLI's writers (`transcribe/writers.py`), so server and CLI subtitles are identical.
- verbose_json: `{task, language, duration, text, segments[], words[], usage}` with OpenAI's segment keys;
  `words[]` only for the `word` granularity, `segments[]` for `segment` or no granularity (as OpenAI).
  `language` is a lower-case English name ("english"), as OpenAI writes it; for translations it is the
  output language (OpenAI: "always english"). Granite has no language identification, so without a
  `language` hint a transcription says "unknown" rather than invent one (PEERS §5.9: wrong language
  labels are a top complaint). Known speakers add a `speaker` key to segments and words (extension).
- diarized_json: `{task: "transcribe", duration, text, segments[{type, id, start, end, text, speaker}],
  usage}`, speakers lettered A, B, … by first appearance, as OpenAI letters them.
- stream: `transcript.text.segment` events (diarized_json), then `transcript.text.delta` per segment,
  then `transcript.text.done`; the deltas concatenate to exactly the final text.
"""

from __future__ import annotations

import io
import json
import string

from ..prompts import LANGUAGE_NAMES
from ..results import Segment, Transcription, Word
from ..transcribe.writers import WRITERS

MEDIA_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}


def language_name(code: str | None) -> str:
    return LANGUAGE_NAMES[code].lower() if code in LANGUAGE_NAMES else "unknown"


def usage(result: Transcription) -> dict:
    return {"type": "duration", "seconds": round(result.duration, 3)}


def text_file(result: Transcription, fmt: str) -> str:
    """text, srt or vtt as a string."""
    if fmt == "text" and not any(s.speaker for s in result.segments):
        return result.text + "\n"
    buf = io.StringIO()
    WRITERS["txt" if fmt == "text" else fmt](result, buf)
    return buf.getvalue()


def _segment(s: Segment) -> dict:
    d = s.to_dict()
    d.pop("words", None)  # OpenAI lists words once, at the top level
    return d


def _word(w: Word) -> dict:
    d = {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
    if w.speaker is not None:
        d["speaker"] = w.speaker
    return d


def verbose_body(result: Transcription, *, segments: bool, words: bool, files: tuple[str, ...] = ()) -> dict:
    translated = result.task == "translate"
    body: dict = {
        "task": result.task,
        "language": language_name(result.target_language if translated else result.language),
        "duration": round(result.duration, 3),
        "text": result.text,
    }
    if segments:
        body["segments"] = [_segment(s) for s in result.segments]
    if words:
        body["words"] = [_word(w) for w in result.words]
    body["usage"] = usage(result)
    if files:
        body["files"] = {ext: text_file(result, ext) for ext in files}
    return body


def speaker_letters(segments: tuple[Segment, ...]) -> list[str]:
    """One letter per segment: A, B, … by first appearance; an unlabelled segment keeps the previous
    speaker (the first one, A, when the model marked no turn at all)."""
    letters: dict[str, str] = {}
    out, current = [], "A"
    for s in segments:
        if s.speaker is not None:
            if s.speaker not in letters:
                k = len(letters)
                letters[s.speaker] = string.ascii_uppercase[k] if k < 26 else f"S{k + 1}"
            current = letters[s.speaker]
        out.append(current)
    return out


def diarized_segments(result: Transcription) -> list[dict]:
    return [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{s.id}",
            "start": round(s.start, 3),
            "end": round(s.end, 3),
            "text": s.text.strip(),
            "speaker": letter,
        }
        for s, letter in zip(result.segments, speaker_letters(result.segments), strict=True)
    ]


def diarized_body(result: Transcription) -> dict:
    return {
        "task": "transcribe",
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": diarized_segments(result),
        "usage": usage(result),
    }


def body_for(result: Transcription, fmt: str, *, segments=True, words=False, files=()) -> dict | str:
    """The answer for `response_format=fmt`: a dict (JSON formats) or a string (text formats)."""
    if fmt == "json":
        return {"text": result.text, "usage": usage(result)}
    if fmt == "verbose_json":
        return verbose_body(result, segments=segments, words=words, files=files)
    if fmt == "diarized_json":
        return diarized_body(result)
    return text_file(result, fmt)


# ------------------------------------------------------------------------------------------ streaming


def deltas(result: Transcription) -> list[str]:
    """Per-segment pieces of `result.text` whose concatenation is exactly `result.text`."""
    text, pos, out = result.text, 0, []
    for s in result.segments:
        piece = s.text.strip()
        i = text.find(piece, pos) if piece else -1
        if i < 0:
            continue
        out.append(text[pos : i + len(piece)])
        pos = i + len(piece)
    if pos < len(text):
        out.append(text[pos:])
    return out


def stream_events(result: Transcription, fmt: str) -> list[dict]:
    events: list[dict] = diarized_segments(result) if fmt == "diarized_json" else []
    events += [{"type": "transcript.text.delta", "delta": d} for d in deltas(result)]
    events.append({"type": "transcript.text.done", "text": result.text})
    return events


def sse(event: dict) -> bytes:
    """One server-sent event: a `data:` line (the openai clients dispatch on its `type`)."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
