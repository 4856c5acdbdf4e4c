"""The corpus job's output folder (issue 7 §2): per-input results written atomically, and a manifest of
outcomes that ends with exactly one line per input, whatever crashed in between.

Layout of OUTPUT (`<stem>` is the input id without its audio extension, sub-folders kept):

    OUTPUT/<stem>.json            Transcription.to_dict() (Whisper's keys) plus "id": the commit marker
    OUTPUT/<stem>.<fmt>           the other formats asked for (txt, srt, vtt, tsv)
    OUTPUT/_errors/<stem>.json    {"id", "source", "error"} for an input that could not be transcribed
    OUTPUT/outcomes.jsonl         one line per input: id, source, status, duration, outputs | error

Durability rules (why each exists):
- Every file is written to a temporary name in the same folder, fsynced, then `os.replace`d: a kill -9
  leaves either the old file, the new one, or a stray temporary (removed by the next run), never a torn file.
- A result's format files are written before its json, so the json is the commit: an input whose json
  exists is done; one killed half-way through its formats is redone and overwritten.
- The per-input files, not outcomes.jsonl, are the source of truth. Lines are appended to outcomes.jsonl as
  inputs finish (to watch a running job); `finalize` rewrites it from the per-input files in input order, so
  a crash between a commit and its append (or a torn last line) cannot lose or duplicate an outcome.
- A success removes any stale error record of the same input, so an input never has both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ERRORS_DIR = "_errors"
OUTCOMES = "outcomes.jsonl"
TMP_MARK = ".tmp-"
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".webm", ".aac", ".wma"}
AUDIO_EXTENSIONS |= {".aif", ".aiff", ".au", ".mp4", ".mkv", ".mov", ".sph"}


@dataclass(frozen=True)
class CorpusItem:
    """One input: a stable id (path relative to the input root, or the manifest's id) and where to read it."""

    id: str
    path: str
    seconds: float = 0.0  # estimated duration (for length-aware batching; 0 = unknown)


@dataclass(frozen=True)
class Outcome:
    """What became of one input: rendered outputs ({format: text}) or an error message."""

    id: str
    source: str
    duration: float = 0.0
    rendered: dict[str, str] = field(default_factory=dict)  # always has "json" when ok
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder, fsync, and rename (POSIX-atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stems_for(items: Sequence[CorpusItem]) -> dict[str, str]:
    """id → output stem: the id without its audio extension (Whisper's naming), or the whole id where two
    inputs would share a stem (talk.mp3 and talk.wav), so no two inputs ever write the same files."""
    base = {it.id: _strip_ext(it.id) for it in items}
    counts: dict[str, int] = {}
    for stem in base.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {i: (s if counts[s] == 1 else _safe(i)) for i, s in base.items()}


def _strip_ext(item_id: str) -> str:
    p = PurePosixPath(_safe(item_id))
    return str(p.with_suffix("")) if p.suffix.lower() in AUDIO_EXTENSIONS and p.stem else str(p)


def _safe(item_id: str) -> str:
    """A relative POSIX path that stays inside OUTPUT (no absolute paths, no '..', no hidden names)."""
    parts = [p for p in PurePosixPath(item_id.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    parts = [("_" + p[1:]) if p.startswith(".") else p for p in parts]
    return "/".join(parts) or "_"


class CorpusStore:
    """The output folder of one corpus job over a fixed list of inputs (single writer: the driver)."""

    def __init__(self, root: str | os.PathLike, items: Sequence[CorpusItem], formats: Sequence[str]):
        self.root = Path(root)
        self.items = list(items)
        self.formats = tuple(f for f in formats if f != "json")
        self.stems = stems_for(self.items)
        if len(self.stems) != len(self.items):
            raise ValueError("input ids must be unique")
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stray_temporaries()

    # ------------------------------------------------------------------ paths
    def result_path(self, item_id: str) -> Path:
        return self.root / f"{self.stems[item_id]}.json"

    def error_path(self, item_id: str) -> Path:
        return self.root / ERRORS_DIR / f"{self.stems[item_id]}.json"

    def is_done(self, item_id: str, *, retry_errors: bool = False) -> bool:
        if self.result_path(item_id).exists():
            return True
        return not retry_errors and self.error_path(item_id).exists()

    def pending(self, *, retry_errors: bool = False) -> list[CorpusItem]:
        """Inputs without a result (and, unless `retry_errors`, without an error record)."""
        return [it for it in self.items if not self.is_done(it.id, retry_errors=retry_errors)]

    # ------------------------------------------------------------------ writing
    def commit(self, outcome: Outcome) -> None:
        """Make one input's outcome durable, then append its line to outcomes.jsonl."""
        stem = self.stems[outcome.id]
        if outcome.ok:
            for fmt in self.formats:  # formats first: the json written last is the commit marker
                atomic_write(self.root / f"{stem}.{fmt}", outcome.rendered[fmt])
            atomic_write(self.result_path(outcome.id), outcome.rendered["json"])
            self.error_path(outcome.id).unlink(missing_ok=True)
        else:
            record = {"id": outcome.id, "source": outcome.source, "error": outcome.error}
            atomic_write(self.error_path(outcome.id), json.dumps(record, ensure_ascii=False) + "\n")
        with open(self.root / OUTCOMES, "a", encoding="utf-8") as f:
            f.write(json.dumps(self._line(outcome.id), ensure_ascii=False) + "\n")

    def finalize(self) -> list[dict]:
        """Rewrite outcomes.jsonl from the per-input files: one line per finished input, in input order."""
        lines = [line for it in self.items if (line := self._line(it.id)) is not None]
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        atomic_write(self.root / OUTCOMES, text)
        return lines

    def _line(self, item_id: str) -> dict | None:
        result = self.result_path(item_id)
        if result.exists():
            data = json.loads(result.read_text("utf-8"))
            stem = self.stems[item_id]
            outputs = [f"{stem}.json"] + [f"{stem}.{fmt}" for fmt in self.formats]
            return {"id": item_id, "source": data.get("source"), "status": "ok",
                    "duration": data.get("duration", 0.0), "outputs": outputs}  # fmt: skip
        error = self.error_path(item_id)
        if error.exists():
            data = json.loads(error.read_text("utf-8"))
            return {"id": item_id, "source": data.get("source"), "status": "error", "error": data["error"]}
        return None

    def _remove_stray_temporaries(self) -> None:
        """Temporaries of a killed run (`.<name>.tmp-<pid>`): never committed, so safe to delete."""
        for path in _walk(self.root):
            if path.name.startswith(".") and TMP_MARK in path.name:
                path.unlink(missing_ok=True)


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name
