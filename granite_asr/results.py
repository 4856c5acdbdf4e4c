"""Typed results, defined once: `Word`, `Segment`, `Transcription`. `to_dict()` gives Whisper's keys
(PEERS §6.3) plus `speaker` where known, so tools built for Whisper output read ours unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Word:
    word: str  # with its leading space, as Whisper writes words
    start: float
    end: float
    probability: float = 1.0
    speaker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}
        d["probability"] = round(self.probability, 4)
        if self.speaker is not None:
            d["speaker"] = self.speaker
        return d


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    words: tuple[Word, ...] = ()
    speaker: str | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    compression_ratio: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "seek": 0,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "tokens": list(self.tokens),
            "temperature": self.temperature,
            "avg_logprob": self.avg_logprob,
            "compression_ratio": self.compression_ratio,
            "no_speech_prob": self.no_speech_prob,
        }
        if self.words:
            d["words"] = [w.to_dict() for w in self.words]
        if self.speaker is not None:
            d["speaker"] = self.speaker
        return d


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str | None
    segments: tuple[Segment, ...] = ()
    duration: float = 0.0
    source: str | None = None  # file name, or None for arrays
    task: str = "transcribe"
    target_language: str | None = None
    error: str | None = None  # set instead of raising when one file of a batch fails

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
            "language": self.language,
            "duration": round(self.duration, 3),
            "task": self.task,
        }
        if self.target_language:
            d["target_language"] = self.target_language
        if self.source is not None:
            d["source"] = self.source
        if self.error is not None:
            d["error"] = self.error
        return d
