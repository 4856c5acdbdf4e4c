"""Result writers: txt, json, srt, vtt, tsv (and all), in openai/whisper's formats (PEERS §6.3).

- One file per input, `<output_dir>/<stem>.<ext>`: `out/talk.srt` for `talk.mp3` (`output_stem`).
- SRT: 1-based index, `HH:MM:SS,mmm --> HH:MM:SS,mmm` (hours always), text, blank line.
- VTT: `WEBVTT` and a blank line, then `[HH:]MM:SS.mmm --> …` (hours only when non-zero, as Whisper
  writes them; both forms are valid WebVTT), `-->` inside text replaced by `->`.
- TSV: header `start\\tend\\ttext`, integer milliseconds (locale-proof), tabs in text replaced by spaces.
- TXT: one segment per line. JSON: `Transcription.to_dict()` (Whisper's keys), UTF-8, not ASCII-escaped.
- A known speaker prefixes the text as `[Speaker 1]: ` in txt, srt, vtt and tsv.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..results import Segment, Transcription

FORMATS = ("txt", "json", "srt", "vtt", "tsv")
ALL_FORMATS = (*FORMATS, "all")


def format_timestamp(seconds: float, *, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """Whisper's `format_timestamp`: `[HH:]MM:SS<marker>mmm`, rounded to the millisecond."""
    if seconds < 0:
        raise ValueError(f"non-negative timestamp expected, got {seconds}")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    prefix = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{prefix}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _line(segment: Segment) -> str:
    text = " ".join(segment.text.split())  # no newlines inside a cue or a row
    return f"[{segment.speaker}]: {text}" if segment.speaker else text


def write_txt(result: Transcription, file: TextIO) -> None:
    for segment in result.segments:
        print(_line(segment), file=file)


def write_json(result: Transcription, file: TextIO) -> None:
    json.dump(result.to_dict(), file, ensure_ascii=False, indent=2)
    file.write("\n")


def write_srt(result: Transcription, file: TextIO) -> None:
    for i, segment in enumerate(result.segments, start=1):
        start = format_timestamp(segment.start, always_include_hours=True, decimal_marker=",")
        end = format_timestamp(max(segment.end, segment.start), always_include_hours=True, decimal_marker=",")
        print(f"{i}\n{start} --> {end}\n{_line(segment)}\n", file=file)


def write_vtt(result: Transcription, file: TextIO) -> None:
    print("WEBVTT\n", file=file)
    for segment in result.segments:
        start, end = format_timestamp(segment.start), format_timestamp(max(segment.end, segment.start))
        print(f"{start} --> {end}\n{_line(segment).replace('-->', '->')}\n", file=file)


def write_tsv(result: Transcription, file: TextIO) -> None:
    print("start", "end", "text", sep="\t", file=file)
    for segment in result.segments:
        text = _line(segment).replace("\t", " ")
        print(round(1000 * segment.start), round(1000 * segment.end), text, sep="\t", file=file)


WRITERS: dict[str, Callable[[Transcription, TextIO], None]] = {
    "txt": write_txt,
    "json": write_json,
    "srt": write_srt,
    "vtt": write_vtt,
    "tsv": write_tsv,
}


def formats_for(fmt: str) -> tuple[str, ...]:
    if fmt == "all":
        return FORMATS
    if fmt not in WRITERS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(ALL_FORMATS)}")
    return (fmt,)


def output_stem(source: str | None, index: int = 0) -> str:
    """`talk` for `talk.mp3`, `stdin` for `-`, `audio_<i>` for inputs without a name (arrays, bytes)."""
    if source in ("-", "<stdin>"):
        return "stdin"
    if not source or source.startswith("<"):
        return f"audio_{index}"
    return Path(source).stem or f"audio_{index}"


def write_result(
    result: Transcription, output_dir: str | Path, fmt: str = "all", *, stem: str | None = None
) -> list[Path]:
    """Write `result` in `fmt` ("all" = every format) to `output_dir/<stem>.<ext>` → the paths written."""
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = stem or output_stem(result.source)
    paths = []
    for ext in formats_for(fmt):
        path = directory / f"{stem}.{ext}"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            WRITERS[ext](result, f)
        paths.append(path)
    return paths
