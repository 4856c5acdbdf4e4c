"""`transcribe_corpus(INPUT, OUTPUT)`: a folder, glob or manifest of audio files → a folder of results
(issue 7 §1–2), here on this machine; `--ray` runs the same groups on Ray Data (`corpus_ray.py`).

Flow: inputs found and given stable ids (`find_inputs`) → those already done skipped (`CorpusStore`) →
the rest sorted by duration and packed into groups of similar length (`make_groups`, the length-aware
batching both modes share, so they give identical results) → each group transcribed in one `transcribe`
call (`run_group`; a group that raises is redone file by file, so a bad file becomes an error record and
never stops the job) → each outcome committed atomically → outcomes.jsonl rewritten at the end.

INPUT forms: a folder (every audio file below it; id = path relative to the folder), a glob (id = path
relative to the glob's fixed prefix), or a JSONL / CSV manifest with an `audio` (or `path`) column and
optional `id` and `duration` columns (relative paths are relative to the manifest).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..options import TranscribeOptions
from .corpus_store import AUDIO_EXTENSIONS, CorpusItem, CorpusStore, Outcome
from .pipeline import engine_for, transcribe
from .writers import WRITERS, formats_for

BYTES_PER_SECOND = 32000.0  # duration guess for files soundfile cannot probe (16-bit mono 16 kHz)


@dataclass(frozen=True)
class CorpusOptions:
    """How the corpus job runs (the transcription itself is a `TranscribeOptions`)."""

    formats: tuple[str, ...] = ("json",)  # json is always written; add txt, srt, vtt, tsv
    group_seconds: float = 120.0  # audio per transcribe call (one Ray Data row)
    group_files: int = 16  # files per transcribe call, at most
    retry_errors: bool = False  # redo inputs that have an error record
    progress: bool = True
    # Ray Data (issue 7 §1): None = local mode; "local" starts a Ray instance here, else a cluster address.
    ray_address: str | None = None
    actors: int | None = None  # model actors (default: one per GPU, else one per `cpus_per_actor` CPUs)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0
    device: str | None = None  # for the model in each actor / here (default: cuda if available)
    dtype: str | None = None  # "float32", "bfloat16", "float16" (default: per device)
    quantize: str | None = None  # "int8": int8 decoder weights (CPU; `load_model(quantize=)`)


@dataclass(frozen=True)
class CorpusReport:
    total: int  # inputs found
    skipped: int  # already done before this run
    ok: int  # results in OUTPUT at the end
    errors: int  # error records in OUTPUT at the end
    audio_seconds: float  # audio transcribed by this run
    wall_seconds: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


# ------------------------------------------------------------------------------------------ inputs


def find_inputs(source: str | os.PathLike) -> list[CorpusItem]:
    """INPUT (folder, glob, .jsonl/.csv manifest) → items with stable ids, in a deterministic order."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        return [_item(p.relative_to(path).as_posix(), p) for p in files]
    if path.is_file() and path.suffix.lower() in (".jsonl", ".csv"):
        return _manifest_items(path)
    if glob.has_magic(text):
        prefix = text[: min(text.find(c) for c in "*?[" if c in text)]  # the glob's fixed part
        root = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        return [_item(_relative(p, root), p) for p in files]
    if path.is_file():
        return [_item(path.name, path)]
    raise FileNotFoundError(f"{text}: no such folder, file, manifest or matching glob")


def _relative(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _item(item_id: str, path: Path, seconds: float | None = None) -> CorpusItem:
    return CorpusItem(item_id, str(path), seconds if seconds is not None else probe_seconds(path))


def _manifest_items(manifest: Path) -> list[CorpusItem]:
    text = manifest.read_text("utf-8")
    if manifest.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    items = []
    for n, row in enumerate(rows, start=1):
        audio = row.get("audio") or row.get("path")
        if not audio:
            raise ValueError(f"{manifest}:{n}: a manifest row needs an 'audio' (or 'path') field")
        path = Path(audio) if Path(audio).is_absolute() else manifest.parent / audio
        seconds = float(row["duration"]) if row.get("duration") not in (None, "") else None
        items.append(_item(str(row.get("id") or audio), path, seconds))
    if len({it.id for it in items}) != len(items):
        raise ValueError(f"{manifest}: ids are not unique")
    return items


def probe_seconds(path: Path) -> float:
    """Duration from the header (soundfile), else guessed from the size: only used to sort and group."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:  # any unreadable or non-libsndfile file: its size is a good enough guess
        try:
            return path.stat().st_size / BYTES_PER_SECOND
        except OSError:
            return 0.0


def make_groups(
    items: Sequence[CorpusItem], group_seconds: float, group_files: int
) -> list[list[CorpusItem]]:
    """Length-aware batching: sort by duration, pack neighbours until a group holds `group_seconds` of
    audio or `group_files` files. Deterministic, and shared by both modes so their results are equal."""
    order = sorted(items, key=lambda it: (it.seconds, it.id))
    groups: list[list[CorpusItem]] = []
    current: list[CorpusItem] = []
    seconds = 0.0
    for it in order:
        if current and (seconds + it.seconds > group_seconds or len(current) >= group_files):
            groups.append(current)
            current, seconds = [], 0.0
        current.append(it)
        seconds += it.seconds
    if current:
        groups.append(current)
    return groups


# ------------------------------------------------------------------------------------------ work


def render(result, item: CorpusItem, formats: Sequence[str]) -> Outcome:
    """A Transcription → its rendered outputs (or its error), ready for `CorpusStore.commit`."""
    source = result.source or item.path
    if result.error is not None:
        return Outcome(item.id, source, error=result.error)
    rendered = {"json": json.dumps({"id": item.id, **result.to_dict()}, ensure_ascii=False, indent=2) + "\n"}
    for fmt in formats:
        if fmt != "json":
            buffer = io.StringIO()
            WRITERS[fmt](result, buffer)
            rendered[fmt] = buffer.getvalue()
    return Outcome(item.id, source, duration=result.duration, rendered=rendered)


def run_group(model, group: Sequence[CorpusItem], options: TranscribeOptions, formats) -> list[Outcome]:
    """Transcribe one group; if the batch raises (anything: a decoder bug on one odd file), redo it file
    by file so only the culprit becomes an error record."""
    options = options.replace(progress=False)
    try:
        results = transcribe(model, [it.path for it in group], options=options)
        return [render(r, it, formats) for r, it in zip(results, group, strict=True)]
    except Exception:
        if len(group) == 1:
            return [_failed(model, group[0], options, formats)]
        return [out for it in group for out in run_group(model, [it], options, formats)]


def _failed(model, item: CorpusItem, options: TranscribeOptions, formats) -> Outcome:
    try:
        return render(transcribe(model, item.path, options=options), item, formats)
    except Exception as e:  # the error record names the file and the problem (issue 7 §2)
        return Outcome(item.id, item.path, error=f"{item.path}: {type(e).__name__}: {e}")


class Progress:
    """tqdm over files with files/s, audio hours/s and ETA (issue 7 §1)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="file", disable=not enabled, desc="corpus", smoothing=0.1)
        self.start, self.audio = time.time(), 0.0

    def update(self, outcome: Outcome) -> None:
        self.audio += outcome.duration
        rate = self.audio / 3600 / max(1e-9, time.time() - self.start)
        self.bar.set_postfix_str(f"audio {self.audio / 3600:.3f} h, {rate:.4f} audio h/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------ driver


def transcribe_corpus(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model=None,
    options: CorpusOptions | None = None,
    transcribe_options: TranscribeOptions | None = None,
) -> CorpusReport:
    """Transcribe every input under `source` into `output`; safe to rerun after a crash (it skips what is
    done). `model`: a loaded model (local mode only), or a checkpoint directory / hub id / None (the
    embedded default), which Ray actors load themselves."""
    options = options or CorpusOptions()
    transcribe_options = transcribe_options or TranscribeOptions()
    formats = tuple(dict.fromkeys(("json", *(f for spec in options.formats for f in formats_for(spec)))))
    start = time.time()
    store = CorpusStore(output, find_inputs(source), formats)
    todo = store.pending(retry_errors=options.retry_errors)
    groups = make_groups(todo, options.group_seconds, options.group_files)
    if options.ray_address is not None:
        from .corpus_ray import run_ray

        outcomes = run_ray(model, groups, transcribe_options, formats, options)
    elif groups:
        if model is None or isinstance(model, (str, os.PathLike)):
            model = load_for_corpus(model, options)
        engine_for(model).check(transcribe_options)  # an impossible task fails here, not as N error records
        outcomes = (out for group in groups for out in run_group(model, group, transcribe_options, formats))
    else:
        outcomes = iter(())  # all done: a rerun of a finished job loads no model
    progress = Progress(len(todo), options.progress)
    try:
        for outcome in outcomes:
            store.commit(outcome)
            progress.update(outcome)
    finally:
        progress.close()
    lines = store.finalize()
    ok = sum(line["status"] == "ok" for line in lines)
    return CorpusReport(
        total=len(store.items), skipped=len(store.items) - len(todo), ok=ok, errors=len(lines) - ok,
        audio_seconds=round(progress.audio, 3), wall_seconds=round(time.time() - start, 3),
    )  # fmt: skip


def load_for_corpus(path: str | os.PathLike | None, options: CorpusOptions):
    """Load a model for the corpus job (here or in a Ray actor) on `options.device` / `options.dtype`."""
    import torch

    from ..api import load_model

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, options.dtype) if options.dtype else None
    return load_model(path, device=device, dtype=dtype, quantize=options.quantize)
