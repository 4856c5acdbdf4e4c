"""`transcribe(model_or_engine, inputs, ...)`: files or arrays of any length → `Transcription`s.

Flow per call (issue 3 §2): options validated against the variant (an impossible task fails before any
audio is read) → each input loaded (an `AudioError` becomes that file's `Transcription.error`; the batch
goes on) → windows at pauses (`windows.py`) → windows of all files run through `Engine.run` in groups
(the engine buckets by length) → per window: Plus tags parsed, words aligned, segments drafted
(`assemble.py`) → speaker labels made file-wide (`speakers.py`) → times are absolute.

Memory stays bounded on long inputs (PEERS §5.5): inputs are loaded one at a time as the queue of
windows needs them, a group holds at most `GROUP_SECONDS` of audio, windows are views of the file's
waveform, and a file's waveform is released as soon as its last window is assembled. Engine outputs
(posteriors) live only for one group.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..audio.io import AudioError, load_audio
from ..options import DecodeOptions, TranscribeOptions
from ..prompts import canonical_language
from ..results import Segment, Transcription
from .assemble import SegmentDraft, assemble_windows, join_texts
from .speakers import SpeakerTracker
from .windows import Window, windows_for

SAMPLE_RATE = 16000
GROUP_WINDOWS = 64  # windows per Engine.run call (at least; raised to 2 × batch_size)
GROUP_SECONDS = 1800.0  # audio per Engine.run call, at most
_DECODE_FIELDS = {f.name for f in dataclasses.fields(DecodeOptions)}
_OPTION_FIELDS = {f.name for f in dataclasses.fields(TranscribeOptions)}
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Timestamp mode: a window cut short is decoded again after its last timed word while at least
# RESUME_MIN_SECONDS of it are left, at most MAX_RESUMES times (`_resume_cut_windows`).
RESUME_MIN_SECONDS = 1.0
MAX_RESUMES = 4


# ------------------------------------------------------------------------------------------ options


def make_options(options: TranscribeOptions | None = None, **kwargs: Any) -> TranscribeOptions:
    """Keyword arguments (TranscribeOptions or DecodeOptions fields) applied over `options`."""
    options = options or TranscribeOptions()
    unknown = set(kwargs) - _DECODE_FIELDS - _OPTION_FIELDS
    if unknown:
        raise TypeError(f"unknown transcribe option(s): {', '.join(sorted(unknown))}")
    decode = {k: kwargs.pop(k) for k in list(kwargs) if k in _DECODE_FIELDS and k not in _OPTION_FIELDS}
    if "keywords" in kwargs:
        kw = kwargs["keywords"]
        kwargs["keywords"] = () if kw is None else ((kw,) if isinstance(kw, str) else tuple(kw))
    if decode:
        kwargs["decode"] = dataclasses.replace(kwargs.get("decode", options.decode), **decode)
    return options.replace(**kwargs) if kwargs else options


def engine_for(model_or_engine):
    """An Engine for a model (cached per model), or the engine passed in."""
    if not isinstance(model_or_engine, nn.Module):
        return model_or_engine
    engine = _ENGINES.get(model_or_engine)
    if engine is None:
        from ..engine.engine import Engine

        engine = _ENGINES[model_or_engine] = Engine(model_or_engine)
    return engine


# ------------------------------------------------------------------------------------------ files


@dataclass
class _File:
    """One input on its way through: its waveform until its last window is assembled."""

    index: int
    source: str | None
    audio: np.ndarray | None = None
    duration: float = 0.0
    windows: list[Window] = field(default_factory=list)
    drafts: dict[int, list[SegmentDraft]] = field(default_factory=dict)
    error: str | None = None
    speakers: SpeakerTracker | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or len(self.drafts) == len(self.windows)


def _source_name(item) -> str | None:
    """A path's text, or a file object's name (sys.stdin.buffer → "<stdin>"); None for arrays and bytes."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    name = getattr(item, "name", None)
    return name if isinstance(name, str) else None


def _load(item) -> np.ndarray:
    """A path, bytes, file object, 16 kHz array, (array, rate) pair or {"array", "sampling_rate"} dict."""
    if isinstance(item, dict):  # Hugging Face datasets' Audio feature (PEERS §6.2)
        array = item.get("array", item.get("raw"))
        return load_audio(np.asarray(array), source_rate=int(item.get("sampling_rate", SAMPLE_RATE)))
    if isinstance(item, tuple) and len(item) == 2:
        return load_audio(np.asarray(item[0]), source_rate=int(item[1]))
    return load_audio(item)


def _open_file(index: int, item, options: TranscribeOptions) -> _File:
    f = _File(index, _source_name(item))
    try:
        f.audio = _load(item)
    except (AudioError, OSError) as e:
        f.error = str(e) if isinstance(e, AudioError) else f"{f.source or '<input>'}: {e}"
        return f
    f.duration = len(f.audio) / SAMPLE_RATE
    f.windows = windows_for(f.audio, max_seconds=options.chunk_seconds, vad=options.vad)
    if options.speakers:
        f.speakers = SpeakerTracker(SAMPLE_RATE)
    return f


# ------------------------------------------------------------------------------------------ result


def _finish(f: _File, options: TranscribeOptions) -> Transcription:
    language = canonical_language(options.language)
    target = canonical_language(options.target_language) if options.task == "translate" else None
    if options.task == "translate" and target is None:
        target = "en"
    base = {"language": language, "source": f.source, "task": options.task, "target_language": target}
    if f.error is not None:
        return Transcription(text="", error=f.error, **base)
    segments = []
    for k in range(len(f.windows)):
        for d in f.drafts[k]:
            words = d.words if options.word_timestamps or options.model_timestamps else ()
            if d.speaker is not None:
                words = tuple(dataclasses.replace(w, speaker=d.speaker) for w in words)
            segments.append(
                Segment(
                    id=len(segments),
                    start=d.start,
                    end=d.end,
                    text=d.text,
                    tokens=d.tokens,
                    words=words,
                    speaker=d.speaker,
                    avg_logprob=round(d.avg_logprob, 4),
                )
            )
    text = join_texts([s.text for s in segments])
    return Transcription(text=text, segments=tuple(segments), duration=round(f.duration, 3), **base)


def _relabel(f: _File, drafts: list[SegmentDraft]) -> list[SegmentDraft]:
    """Window-local Plus speaker labels → file-wide ones (`SpeakerTracker`)."""
    if f.speakers is None or not any(d.speaker is not None for d in drafts):
        return drafts
    spans = [(d.speaker, d.start, d.end) for d in drafts if d.speaker is not None]
    mapping = f.speakers.assign(f.audio, spans)
    return [dataclasses.replace(d, speaker=mapping.get(d.speaker)) for d in drafts]


# ------------------------------------------------------------------------------------------ driver


def _progress(options: TranscribeOptions):
    from tqdm.auto import tqdm

    return tqdm(
        total=0.0,
        unit="s",
        unit_scale=False,
        disable=not options.progress,
        desc="transcribing",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]",
    )


def _run_group(engine, group: list[tuple[_File, int]], options: TranscribeOptions, bar) -> None:
    windows = [f.windows[k] for f, k in group]
    audios = [f.audio[w.start : w.end] for (f, _), w in zip(group, windows, strict=True)]
    seconds = sum(w.num_samples for w in windows) / SAMPLE_RATE
    shown = [0.0]

    def on_batch(done: int, total: int) -> None:  # the bar moves with every engine batch
        bar.update(seconds * done / total - shown[0])
        shown[0] = seconds * done / total

    results = engine.run(audios, options, on_batch=on_batch)
    bar.update(seconds - shown[0])
    if len(results) != len(audios):
        raise RuntimeError(f"engine returned {len(results)} results for {len(audios)} windows")
    drafts = assemble_windows(results, windows, sample_rate=SAMPLE_RATE)
    if options.model_timestamps:
        _resume_cut_windows(engine, [f for f, _ in group], windows, results, drafts, options)
    for (f, k), d in zip(group, drafts, strict=True):
        f.drafts[k] = _relabel(f, d)


def _resume_cut_windows(engine, files, windows, results, drafts, options: TranscribeOptions) -> None:
    """Timestamp mode: a window whose decoding was cut (loop guard or token limit) before its end is
    decoded again from its last timed word on, and the drafts are extended in place — Whisper's seek
    to the last timestamp, so a loop or a long window costs its loop, not the rest of the window."""
    todo = list(range(len(windows)))
    for _ in range(MAX_RESUMES):
        cut = []
        for i in todo:
            if results[i].stop_reason not in ("repeat", "length") or not drafts[i]:
                continue
            w = windows[i]
            start = max(w.start, round(drafts[i][-1].end * SAMPLE_RATE))
            if w.end - start >= RESUME_MIN_SECONDS * SAMPLE_RATE:
                cut.append((i, Window(start, w.end, max(start, w.speech_start), w.speech_end)))
        if not cut:
            return
        audios = [files[i].audio[w.start : w.end] for i, w in cut]
        results_again = engine.run(audios, options)
        more = assemble_windows(results_again, [w for _, w in cut], sample_rate=SAMPLE_RATE)
        for (i, w), r, d in zip(cut, results_again, more, strict=True):
            windows[i], results[i] = w, r
            drafts[i] = drafts[i] + d
        todo = [i for i, _ in cut]


def _transcribe_all(engine, items: list, options: TranscribeOptions) -> list[Transcription]:
    out: list[Transcription | None] = [None] * len(items)
    queue: deque[tuple[_File, int]] = deque()
    limit = max(GROUP_WINDOWS, 2 * (options.decode.batch_size or 0))
    pending: list[_File] = []
    bar = _progress(options)
    next_item = 0

    def settle() -> None:
        for f in [f for f in pending if f.done]:
            out[f.index] = _finish(f, options)
            f.audio = None  # free the waveform now: the next file may be an hour long
            pending.remove(f)

    try:
        while next_item < len(items) or queue:
            # Load inputs until a full group is queued (or none are left).
            while next_item < len(items) and (len(queue) < limit and _queued_seconds(queue) < GROUP_SECONDS):
                f = _open_file(next_item, items[next_item], options)
                next_item += 1
                pending.append(f)
                bar.total += f.duration
                bar.refresh()
                queue.extend((f, k) for k in range(len(f.windows)))
                settle()  # errors and silent files finish at once
            group: list[tuple[_File, int]] = []
            seconds = 0.0
            while queue and len(group) < limit and (not group or seconds < GROUP_SECONDS):
                f, k = queue.popleft()
                group.append((f, k))
                seconds += f.windows[k].num_samples / SAMPLE_RATE
            if group:
                _run_group(engine, group, options, bar)
            settle()
    finally:
        bar.close()
    return out  # type: ignore[return-value]


def _queued_seconds(queue: Iterable[tuple[_File, int]]) -> float:
    return sum(f.windows[k].num_samples for f, k in queue) / SAMPLE_RATE


def transcribe(
    model_or_engine, inputs, *, options: TranscribeOptions | None = None, **option_kwargs: Any
) -> Transcription | list[Transcription]:
    """Transcribe (or translate) one input or a list of inputs; a list in gives a list out.

    inputs: paths (str / Path), encoded bytes, binary file objects, 16 kHz float arrays, (array, rate)
        pairs or {"array", "sampling_rate"} dicts.
    options / option_kwargs: a `TranscribeOptions`, and/or any of its or `DecodeOptions`' fields
        (`mode`, `beam_size`, `batch_size`, `max_new_tokens`, … go to `options.decode`).
    Raises ValueError before any compute when the variant cannot do what is asked (SPEC §8.1), via
    `Engine.check`. An engine passed in needs `run(audios, options, on_batch=)` and `check(options)`.
    """
    options = make_options(options, **option_kwargs)
    engine = engine_for(model_or_engine)
    engine.check(options)  # ValueError for what the variant cannot do, before any audio is read
    single = not isinstance(inputs, list)
    items = [inputs] if single else list(inputs)
    results = _transcribe_all(engine, items, options)
    return results[0] if single else results


def transcribe_method(
    self,
    audio,
    task: str = "transcribe",
    language: str | None = None,
    target_language: str | None = None,
    keywords=None,
    word_timestamps: bool = False,
    speakers: bool = False,
    mode: str = "auto",
    beam_size: int = 1,
    batch_size: int | None = None,
    progress: bool = True,
    **options: Any,
):
    """`model.transcribe(...)` (issue 3's signature); bound to models by `granite_asr.load_model`.

    Extra keyword arguments are further `TranscribeOptions` / `DecodeOptions` fields (e.g.
    `chunk_seconds`, `vad`, `max_new_tokens`, `options=`).
    """
    named = {
        "task": task,
        "language": language,
        "target_language": target_language,
        "keywords": keywords,
        "word_timestamps": word_timestamps,
        "speakers": speakers,
        "mode": mode,
        "beam_size": beam_size,
        "batch_size": batch_size,
        "progress": progress,
    }
    if options.get("options") is not None:  # an explicit options object: only what differs overrides it
        named = {k: v for k, v in named.items() if v != _METHOD_DEFAULTS[k]}
    return transcribe(self, audio, **named, **options)


_METHOD_DEFAULTS = {
    "task": "transcribe",
    "language": None,
    "target_language": None,
    "keywords": None,
    "word_timestamps": False,
    "speakers": False,
    "mode": "auto",
    "beam_size": 1,
    "batch_size": None,
    "progress": True,
}
