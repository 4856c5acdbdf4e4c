"""Parse the 2b-plus text formats (SPEC §7.3): `[Speaker N]:` turns and `word [T:N]` word-end tags.

- Speaker turns use IBM's regex `\\[Speaker\\s+([^\\]]+)\\]\\s*:?`; text before the first tag belongs to no
  speaker (None). Speakers are numbered by order of appearance *within one window*; keeping them stable
  across windows is `pipeline.SpeakerTracker`'s job.
- Timestamp tags give each word's END time in centiseconds modulo 1000 (a 10 s rollover). Unwrapping
  (the card's rule): t = N/100 + 10·R, with R incremented whenever t would go backwards. A word starts
  where the previous tag ended; `_` marks silence: it advances time and is dropped.
- A tag cut off at the end of the text (`… word [T:3`, `… [Speaker 2`: generation stopped at its token
  limit mid-tag) is dropped before parsing, so it never reaches the transcript.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPEAKER_RE = re.compile(r"\[Speaker\s+([^\]]+)\]\s*:?")
TIME_RE = re.compile(r"\[T:\s*(\d+)\s*\]")
OPEN_BRACKET_AT_END_RE = re.compile(r"\[[^\[\]]*$")
TIME_TAG_PREFIX_RE = re.compile(r"T\s*(?::\s*\d*\s*)?")
ROLLOVER_SECONDS = 10.0  # N is centiseconds mod 1000
SILENCE = "_"


@dataclass(frozen=True)
class SpeakerTurn:
    speaker: str | None  # the label inside the tag ("1", "2", …), None before the first tag
    text: str


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float  # seconds, chunk offset included
    end: float


def has_speaker_tags(text: str) -> bool:
    return SPEAKER_RE.search(text) is not None


def has_time_tags(text: str) -> bool:
    return TIME_RE.search(text) is not None


def drop_unfinished_tag(text: str) -> str:
    """Cut a speaker or time tag that the text ends inside of (`… b [T:3` → `… b `); else unchanged.

    Only the beginnings of the two tag forms are cut: `[T`, `[T:`, `[T:3`, `[Spea`, `[Speaker 2`. Any
    other unclosed bracket (`[laughs`) is text the model wrote and is kept.
    """
    m = OPEN_BRACKET_AT_END_RE.search(text)
    if m is None:
        return text
    body = m.group()[1:].lstrip()
    head = body.split(maxsplit=1)[0] if body else ""
    if TIME_TAG_PREFIX_RE.fullmatch(body) or "Speaker".startswith(head):
        return text[: m.start()]
    return text


def parse_speaker_turns(text: str) -> list[SpeakerTurn]:
    """`[Speaker 1]: Hello how are you [Speaker 2]: I'm fine` → turns with stripped text.

    Empty turns (a tag followed directly by another tag) are dropped; consecutive turns of the same
    speaker are merged, so a turn boundary always means a speaker change.
    """
    text = drop_unfinished_tag(text)
    turns: list[SpeakerTurn] = []
    pos, speaker = 0, None
    for m in SPEAKER_RE.finditer(text):
        _add_turn(turns, speaker, text[pos : m.start()])
        speaker, pos = " ".join(m.group(1).split()), m.end()
    _add_turn(turns, speaker, text[pos:])
    return turns


def _add_turn(turns: list[SpeakerTurn], speaker: str | None, chunk: str) -> None:
    chunk = " ".join(chunk.split())
    if not chunk:
        return
    if turns and turns[-1].speaker == speaker:
        turns[-1] = SpeakerTurn(speaker, f"{turns[-1].text} {chunk}")
    else:
        turns.append(SpeakerTurn(speaker, chunk))


def strip_tags(text: str) -> str:
    """Plain transcript: speaker tags, time tags and silence markers removed, spaces normalised."""
    text = TIME_RE.sub(" ", SPEAKER_RE.sub(" ", drop_unfinished_tag(text)))
    return " ".join(w for w in text.split() if w != SILENCE)


def parse_timed_words(text: str, offset: float = 0.0) -> list[TimedWord]:
    """`_ [T:30] and [T:57] so [T:95] …` → words with absolute start/end (seconds + `offset`).

    Several words before one tag share its interval evenly (the model should not do that, but a word is
    never lost). Words after the last tag have no end time: they get a zero-length span at the last end.
    """
    text = drop_unfinished_tag(text)
    words: list[TimedWord] = []
    prev_end, rollovers, pos = 0.0, 0, 0
    for m in TIME_RE.finditer(text):
        end = int(m.group(1)) / 100.0 + ROLLOVER_SECONDS * rollovers
        if end < prev_end:  # the value went backwards: the 10 s counter wrapped
            rollovers += 1
            end = int(m.group(1)) / 100.0 + ROLLOVER_SECONDS * rollovers
        _add_words(words, text[pos : m.start()], prev_end, end, offset)
        prev_end, pos = end, m.end()
    _add_words(words, text[pos:], prev_end, prev_end, offset)
    return words


def _add_words(words: list[TimedWord], chunk: str, start: float, end: float, offset: float) -> None:
    tokens = [t for t in SPEAKER_RE.sub(" ", chunk).split() if t != SILENCE]
    if not tokens:
        return  # a silence marker (or nothing): time advances, no word
    step = (end - start) / len(tokens)
    for k, tok in enumerate(tokens):
        words.append(TimedWord(tok, offset + start + k * step, offset + start + (k + 1) * step))
