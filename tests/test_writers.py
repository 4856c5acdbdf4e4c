"""Writers: every format parsed back with a library (srt, webvtt-py, csv, json), Whisper's conventions."""

import csv
import io
import json

import pytest
import srt
import webvtt

from granite_asr.results import Segment, Transcription, Word
from granite_asr.transcribe.writers import FORMATS, format_timestamp, output_stem, write_result

SEGMENTS = (
    Segment(0, 0.0, 2.5, "Hello there, world.", words=(Word(" Hello", 0.0, 0.4, 0.9),), speaker="Speaker 1"),
    Segment(1, 2.5, 61.0049, "Tabs\tand --> arrows", speaker="Speaker 2"),
    Segment(2, 3661.5, 3725.25, "Ünïcödé 日本語 over an hour"),
)
RESULT = Transcription(text="…", language="en", segments=SEGMENTS, duration=3726.0, source="/x/talk.mp3")


def test_format_timestamp_whisper_rules():
    assert format_timestamp(0) == "00:00.000"
    assert format_timestamp(61.0049, always_include_hours=True, decimal_marker=",") == "00:01:01,005"
    assert format_timestamp(3661.5) == "01:01:01.500"
    assert format_timestamp(59.9996) == "01:00.000"  # rounds across the minute
    with pytest.raises(ValueError):
        format_timestamp(-1)


def test_all_formats_written_with_whisper_names(tmp_path):
    paths = write_result(RESULT, tmp_path / "out", "all")
    assert sorted(p.name for p in paths) == sorted(f"talk.{ext}" for ext in FORMATS)
    assert output_stem("/x/talk.mp3") == "talk" and output_stem("<stdin>") == "stdin"
    assert output_stem(None, 3) == "audio_3" and output_stem("<bytes>", 1) == "audio_1"


def test_srt_parses(tmp_path):
    (path,) = write_result(RESULT, tmp_path, "srt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("1\n00:00:00,000 --> 00:00:02,500\n[Speaker 1]: Hello there, world.\n\n")
    subs = list(srt.parse(text))
    assert [s.index for s in subs] == [1, 2, 3]
    assert subs[1].end.total_seconds() == pytest.approx(61.005)
    assert subs[2].start.total_seconds() == pytest.approx(3661.5)
    assert subs[2].content == "Ünïcödé 日本語 over an hour"
    assert subs[1].content == "[Speaker 2]: Tabs and --> arrows"


def test_vtt_parses(tmp_path):
    (path,) = write_result(RESULT, tmp_path, "vtt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n00:00.000 --> 00:02.500\n")
    cues = webvtt.read(str(path))
    assert [c.start for c in cues] == ["00:00:00.000", "00:00:02.500", "01:01:01.500"]
    assert cues[1].text == "[Speaker 2]: Tabs and -> arrows"  # "-->" would end the cue timing line
    assert cues[2].end == "01:02:05.250"


def test_tsv_parses(tmp_path):
    (path,) = write_result(RESULT, tmp_path, "tsv")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t"))
    assert rows[0] == ["start", "end", "text"]
    assert rows[1] == ["0", "2500", "[Speaker 1]: Hello there, world."]
    assert rows[2][:2] == ["2500", "61005"] and "\t" not in rows[2][2]
    assert rows[3][:2] == ["3661500", "3725250"]


def test_json_and_txt(tmp_path):
    paths = dict((p.suffix, p) for p in write_result(RESULT, tmp_path, "all"))
    d = json.loads(paths[".json"].read_text(encoding="utf-8"))
    assert d["language"] == "en" and d["segments"][0]["words"][0]["word"] == " Hello"
    assert {"id", "seek", "start", "end", "text", "tokens", "avg_logprob", "no_speech_prob"} <= set(
        d["segments"][0]
    )
    assert "日本語" in paths[".json"].read_text(encoding="utf-8")  # not ASCII-escaped
    lines = paths[".txt"].read_text(encoding="utf-8").splitlines()
    assert lines == ["[Speaker 1]: Hello there, world.", "[Speaker 2]: Tabs and --> arrows", SEGMENTS[2].text]


def test_empty_result_gives_valid_empty_files(tmp_path):
    empty = Transcription(text="", language=None, source="silence.wav")
    paths = dict((p.suffix, p) for p in write_result(empty, tmp_path, "all"))
    assert list(srt.parse(paths[".srt"].read_text())) == []
    assert len(webvtt.read(str(paths[".vtt"]))) == 0
    assert paths[".tsv"].read_text() == "start\tend\ttext\n"
    assert paths[".txt"].read_text() == ""
    assert json.loads(paths[".json"].read_text())["text"] == ""


def test_unknown_format_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        write_result(RESULT, tmp_path, "docx")
