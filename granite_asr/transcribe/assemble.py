"""One window's engine output → timed words and sentence-ish segment drafts (absolute times).

Words are timed by CTC forced alignment on the char head for every variant (`decoding.align`, issue 3
§3). Plus outputs are parsed first (SPEC §7.3): `[Speaker N]:` turns become separate segments carrying
the window-local speaker label, and `word [T:N]` tags, when the model wrote them, give the word times
directly (the alignment then only supplies each word's confidence).

Segments: a window's words are split after a sentence end (., ?, !, 。…) once the segment lasts
`MIN_SEGMENT_SECONDS`, at pauses ≥ `PAUSE_SECONDS`, and before a segment would pass
`MAX_SEGMENT_SECONDS` — subtitle-sized pieces whose times hug the speech, instead of one 30 s block that
lingers over silence (PEERS §5.3). Without any text there is no segment: silence gives nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..decoding.align import WordSpan, align_batch
from ..results import Word
from . import plus_tags
from .windows import Window

MIN_SEGMENT_SECONDS = 1.0
PAUSE_SECONDS = 1.0
MAX_SEGMENT_SECONDS = 12.0
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
# Scripts written without spaces: each character is its own word (Whisper does the same for ja/zh).
_CJK_RANGES = "\u3001-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK = re.compile(f"[{_CJK_RANGES}]")
_CJK_PIECES = re.compile(f"[{_CJK_RANGES}]|[^{_CJK_RANGES}]+")  # one CJK character, or a run of others


@dataclass(frozen=True)
class SegmentDraft:
    start: float
    end: float
    words: tuple[Word, ...]
    speaker: str | None  # window-local label from a Plus tag; `SpeakerTracker` makes it global
    tokens: tuple[int, ...]
    avg_logprob: float

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words).strip()


def split_words(text: str) -> list[str]:
    """Text → words, each with its leading space as Whisper writes them (CJK characters without)."""
    words: list[str] = []
    for tok in text.split():
        if not _CJK.search(tok):
            words.append(" " + tok)
            continue
        pieces = _CJK_PIECES.findall(tok)
        words.append(" " + pieces[0])
        words.extend(pieces[1:])
    return words


def join_texts(texts: Sequence[str]) -> str:
    """Join segment texts with a space, except between two CJK characters."""
    out = ""
    for t in texts:
        t = t.strip()
        if not t:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(t[0])):
            out += " "
        out += t
    return out


@dataclass
class _Parsed:
    """A window's text as word strings, plus what the Plus tags said about them."""

    words: list[str]
    turn_of_word: list[int]  # index into speakers (0 when no tags)
    speakers: list[str | None]
    tag_times: list[tuple[float, float]] | None  # seconds inside the window, from [T:N] tags


def _parse(text: str) -> _Parsed:
    if plus_tags.has_time_tags(text):
        timed = plus_tags.parse_timed_words(text)
        words = [" " + w.word for w in timed]
        return _Parsed(words, [0] * len(words), [None], [(w.start, w.end) for w in timed])
    if plus_tags.has_speaker_tags(text):
        words, turn_of_word, speakers = [], [], []
        for k, turn in enumerate(plus_tags.parse_speaker_turns(text)):
            w = split_words(turn.text)
            words.extend(w)
            turn_of_word.extend([k] * len(w))
            speakers.append(turn.speaker)
        return _Parsed(words, turn_of_word, speakers, None)
    words = split_words(text)
    return _Parsed(words, [0] * len(words), [None], None)


def _timed_words(parsed: _Parsed, spans: list[WordSpan] | None, window: Window, result, sr: int):
    """Word objects with absolute, monotonic times clamped to the window."""
    lo, hi = window.start / sr, window.end / sr
    offset, fs = lo, float(result.frame_seconds)
    if spans is None:  # no posteriors: spread the words evenly over the speech span
        s0, s1, n = window.speech_start / sr, window.speech_end / sr, len(parsed.words)
        step = (s1 - s0) / max(n, 1)
        spans = [
            WordSpan((s0 - lo + k * step) / fs, (s0 - lo + (k + 1) * step) / fs, 0.0, False) for k in range(n)
        ]
    words, last = [], lo
    for i, (text, span) in enumerate(zip(parsed.words, spans, strict=True)):
        if parsed.tag_times is not None:
            start, end = (offset + t for t in parsed.tag_times[i])
        else:
            start, end = offset + span.start * fs, offset + span.end * fs
        start = min(max(start, last, lo), hi)
        end = min(max(end, start), hi)
        last = start
        prob = float(np.clip(span.confidence, 0.0, 1.0))
        words.append(Word(text, round(start, 3), round(end, 3), round(prob, 4)))
    return words


def _split(words: list[Word]) -> list[list[Word]]:
    """Sentence-ish groups of consecutive words (see the module docstring)."""
    groups: list[list[Word]] = []
    cur: list[Word] = []
    for i, w in enumerate(words):
        if cur and w.end - cur[0].start > MAX_SEGMENT_SECONDS:
            groups.append(cur)
            cur = []
        cur.append(w)
        nxt = words[i + 1] if i + 1 < len(words) else None
        if nxt is None:
            break
        sentence_end = w.word.rstrip().endswith(_SENTENCE_END) and w.end - cur[0].start >= MIN_SEGMENT_SECONDS
        if sentence_end or nxt.start - w.end >= PAUSE_SECONDS:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def assemble_windows(
    results: Sequence, windows: Sequence[Window], *, sample_rate: int = 16000
) -> list[list[SegmentDraft]]:
    """Engine results and their windows → segment drafts per window. Alignment runs batched over all."""
    parsed = [_parse(r.text) for r in results]
    todo = [i for i, p in enumerate(parsed) if p.words and results[i].char_logits is not None]
    spans_of: dict[int, list[WordSpan]] = {}
    if todo:
        aligned = align_batch([results[i].char_logits for i in todo], [parsed[i].words for i in todo])
        spans_of = dict(zip(todo, aligned, strict=True))
    out = []
    for i, (r, w, p) in enumerate(zip(results, windows, parsed, strict=True)):
        if not p.words:
            out.append([])
            continue
        words = _timed_words(p, spans_of.get(i), w, r, sample_rate)
        logps = list(r.token_logprobs)
        avg = float(np.mean(logps)) if logps else 0.0
        drafts = []
        for k, speaker in enumerate(p.speakers):
            turn = [wd for wd, t in zip(words, p.turn_of_word, strict=True) if t == k]
            drafts.extend(
                SegmentDraft(g[0].start, g[-1].end, tuple(g), speaker, (), avg) for g in _split(turn) if g
            )
        if len(drafts) == 1:  # the window's tokens belong to its only segment
            d = drafts[0]
            drafts = [SegmentDraft(d.start, d.end, d.words, d.speaker, tuple(r.tokens), avg)]
        out.append(drafts)
    return out
