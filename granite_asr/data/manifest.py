"""Corpus manifests (JSONL, one utterance per line): merging corpora rendered separately.

A larger training set is rendered in several runs (different `--seed`s, the same `--heldout-seed`, so the
held-out sentences stay out of every one of them; `corpus.py`). Training reads one manifest, so `merge`
writes a manifest whose audio paths are rewritten relative to the output's folder and whose ids are
prefixed with each source corpus's folder name when two sources use the same id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_manifest(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
    return rows


def merge_manifests(out: Path, sources: list[Path]) -> int:
    """Write `out` with every row of `sources`; returns the row count. Audio paths stay valid."""
    out = Path(out)
    seen: set[str] = set()
    rows = []
    for src in map(Path, sources):
        for row in read_manifest(src):
            audio = Path(row["audio"])
            if not audio.is_absolute():
                audio = Path(os.path.relpath(src.parent / audio, out.parent))
            row = {**row, "audio": audio.as_posix()}
            if row["id"] in seen:
                row["id"] = f"{src.parent.name}-{row['id']}"
            if row["id"] in seen:
                raise ValueError(f"{src}: id {row['id']!r} occurs twice")
            seen.add(row["id"])
            rows.append(row)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return len(rows)
