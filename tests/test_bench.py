"""The speed bench's entry point runs and writes its JSON (issue 6). A smoke test, never a timing test:
tiny shapes, one pass per group, and only the schema is checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("transformers")


def test_bench_smoke_writes_schema(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard only: ~45 s of CPU, far longer on a machine shared with training
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("speed_*.json")
    doc = json.loads(result.read_text())
    assert set(doc) >= {"machine", "matmul_peak_gflops", "records", "summary"}
    assert doc["matmul_peak_gflops"]["used"]["fp32"] > 0
    groups = {r["group"] for r in doc["records"]}
    assert groups == {"ar_vs_transformers", "modes", "encoder", "scaling"}
    for r in doc["records"]:
        assert r["rtfx"] > 0 and r["seconds_per_iter"] > 0 and r["peak_rss_mb"] > 0
    impls = {r["impl"] for r in doc["records"] if r["group"] == "ar_vs_transformers"}
    assert impls == {"ours", "transformers", "ours-unfused"}
    modes = {r["mode"] for r in doc["records"] if r["group"] == "modes"}
    assert modes == {"ar", "ctc", "speculative", "nar"}
    assert any(s["name"].startswith("AR ours / transformers") for s in doc["summary"])
    assert (tmp_path / result.name.replace(".json", ".md")).is_file()


def test_fused_decoder_bench_writes_its_rows(tmp_path):
    """The isolated fused-vs-separate decoder bench runs (one 2b-wide layer, two steps) and writes JSON."""
    from bench import fused_decoder

    fused_decoder.main(["--layers", "1", "--batch", "1", "--steps", "2", "--repeats", "2", "--prompt", "8",
                        "--out", str(tmp_path)])  # fmt: skip
    (out,) = tmp_path.glob("fused_decoder_*.json")
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1] and rows[0]["step_ms"]["fused"] > 0
