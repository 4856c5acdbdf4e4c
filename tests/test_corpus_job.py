"""The corpus job (issue 7 §1–2) on a tiny random checkpoint: 50 short files (one corrupt) in local mode
and on a real local Ray instance give identical outputs; a kill -9 mid-run followed by a rerun leaves
exactly one outcome per input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from granite_asr import cli
from granite_asr.model.checkpoint import save_pretrained
from granite_asr.transcribe.corpus import CorpusOptions, find_inputs, make_groups, transcribe_corpus
from granite_asr.transcribe.corpus_store import OUTCOMES, CorpusItem, stems_for
from granite_asr.transcribe.pipeline import make_options

from .test_transcribe import tiny_model

SR = 16000
N_FILES = 50
CORRUPT = "b/corrupt.wav"
DECODE = {"vad": False, "max_new_tokens": 4, "progress": False}
CLI_DECODE = ["--no-vad", "--max-new-tokens", "4", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(tiny_model("tiny"), path)
    return path


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """49 tones-in-noise of 0.3–1.5 s (wav and flac, two sub-folders) and one corrupt wav."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(N_FILES - 1):
        seconds = 0.3 + 1.2 * rng.random()
        t = np.arange(int(seconds * SR)) / SR
        x = 0.3 * np.sin(2 * np.pi * (150 + 13 * i) * t) + 0.02 * rng.standard_normal(t.size)
        path = root / ("a" if i % 2 else "b") / f"clip{i:02d}.{'flac' if i % 3 == 0 else 'wav'}"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x.astype(np.float32), SR)
    (root / CORRUPT).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)  # truncated header
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(corpus_dir, out, checkpoint, **corpus_kwargs):
    options = CorpusOptions(formats=("srt", "txt"), group_seconds=6.0, progress=False, **corpus_kwargs)
    return transcribe_corpus(
        corpus_dir, out, model=checkpoint, options=options, transcribe_options=make_options(**DECODE)
    )


@pytest.fixture(scope="module")
def local_run(corpus_dir, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    report = _run(corpus_dir, out, checkpoint)
    return out, report


def _assert_one_outcome_per_input(out: Path) -> None:
    """Count: every input has exactly one of result / error record, and one outcomes line."""
    lines = [json.loads(x) for x in (out / OUTCOMES).read_text().splitlines()]
    assert len(lines) == N_FILES and len({x["id"] for x in lines}) == N_FILES
    results = sorted(p for p in out.rglob("*.json") if "_errors" not in p.parts)
    errors = sorted((out / "_errors").rglob("*.json"))
    assert len(results) == N_FILES - 1 and len(errors) == 1
    assert sorted(p.stem for p in out.rglob("*.srt")) == sorted(p.stem for p in results)
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no stray temporaries
    assert [x["id"] for x in lines if x["status"] == "error"] == [CORRUPT]


def test_local_mode_writes_one_outcome_per_input(local_run, corpus_dir):
    out, report = local_run
    assert (report.total, report.ok, report.errors, report.skipped) == (N_FILES, N_FILES - 1, 1, 0)
    _assert_one_outcome_per_input(out)
    error = json.loads((out / "_errors" / "b" / "corrupt.json").read_text())
    assert error["id"] == CORRUPT and "corrupt.wav" in error["error"] and "cannot decode" in error["error"]
    result = json.loads((out / "a" / "clip01.json").read_text())
    assert result["id"] == "a/clip01.wav" and result["source"] == str(corpus_dir / "a" / "clip01.wav")
    assert result["segments"] and (out / "a" / "clip01.txt").exists()
    rerun = _run(corpus_dir, out, corpus_dir.parent / "nowhere")  # nothing to do: the model is never loaded
    assert (rerun.skipped, rerun.ok, rerun.errors, rerun.audio_seconds) == (N_FILES, N_FILES - 1, 1, 0)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")  # a dev dependency: installed in CI, so this never skips there
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_mode_gives_identical_results(ray_instance, local_run, corpus_dir, checkpoint, tmp_path):
    out = tmp_path / "ray"
    report = _run(corpus_dir, out, checkpoint, ray_address="local", actors=2)
    assert (report.ok, report.errors) == (N_FILES - 1, 1)
    local = _tree(local_run[0])
    assert _tree(out) == local  # every result, format file, error record and outcomes.jsonl, byte for byte
    assert len(local) == 3 * (N_FILES - 1) + 2


def _committed(out: Path) -> int:
    return sum(1 for p in out.rglob("*.json")) if out.exists() else 0


def test_kill_9_then_rerun_leaves_exactly_one_outcome_each(local_run, corpus_dir, checkpoint, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "granite_asr", "transcribe-corpus", str(corpus_dir), str(out)]
    cmd += ["--model", str(checkpoint), "--format", "srt", "--format", "txt", "--group-files", "1"]
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(cmd + CLI_DECODE, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 600
    while _committed(out) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _committed(out)
    assert 3 <= done < N_FILES, f"the kill landed outside the run ({done} committed)"
    with open(out / OUTCOMES, "a") as f:  # a torn last line, as a kill during the append would leave
        f.write('{"id": "a/cl')
    code = cli.main(["transcribe-corpus", str(corpus_dir), str(out), "--model", str(checkpoint)]
                    + ["--format", "srt", "--format", "txt", "--group-seconds", "6"] + CLI_DECODE)  # fmt: skip
    assert code == 1  # the corrupt file is an error record, not a stopped job
    _assert_one_outcome_per_input(out)
    assert _tree(out) == _tree(local_run[0])  # redone inputs equal an uninterrupted run's


def test_inputs_from_glob_and_manifests(corpus_dir, tmp_path):
    folder = find_inputs(corpus_dir)
    assert len(folder) == N_FILES and folder[0].id == "a/clip01.wav" and folder[0].seconds > 0.3
    assert [it.id for it in find_inputs(f"{corpus_dir}/a/*.wav")] == [
        it.id.removeprefix("a/") for it in folder if it.id.startswith("a/") and it.id.endswith(".wav")
    ]
    rows = [{"id": f"utt{i}", "audio": str(it.path), "duration": 1.0} for i, it in enumerate(folder[:3])]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text("audio\n" + "".join(f"{r['audio']}\n" for r in rows))
    assert [(it.id, it.seconds) for it in find_inputs(tmp_path / "m.jsonl")] == [
        (f"utt{i}", 1.0) for i in range(3)
    ]
    assert [it.id for it in find_inputs(tmp_path / "m.csv")] == [r["audio"] for r in rows]
    with pytest.raises(FileNotFoundError):
        find_inputs(tmp_path / "missing")


def test_stems_never_collide_and_groups_are_length_aware():
    items = [CorpusItem("x/talk.mp3", ""), CorpusItem("x/talk.wav", ""), CorpusItem("../y/.hidden.flac", "")]
    assert stems_for(items) == {"x/talk.mp3": "x/talk.mp3", "x/talk.wav": "x/talk.wav",
                                "../y/.hidden.flac": "y/_hidden"}  # fmt: skip
    items = [CorpusItem(f"f{i}", "", seconds=s) for i, s in enumerate([5, 1, 4, 1, 9, 2])]
    groups = make_groups(items, group_seconds=6, group_files=2)
    assert [[it.seconds for it in g] for g in groups] == [[1, 1], [2, 4], [5], [9]]
