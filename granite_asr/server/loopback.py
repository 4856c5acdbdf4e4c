"""`granite-asr serve` in a child process on a free loopback port, for tests, benchmarks and notebooks.

One place for what the test suite and `bench/load_server.py` both need: pick a free port, start the server
with its output going to a file (a pipe would block a chatty server once full), wait for `/health`, and
stop it on exit (terminate, then kill). A server that dies while starting raises with its log, so the
cause is visible where it failed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _read(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return log.read()


@contextlib.contextmanager
def loopback_server(
    serve_args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: IO[str] | None = None,
    ready_timeout: float = 300.0,
) -> Iterator[str]:
    """Run `python -m granite_asr serve --port P *serve_args` → yields `http://127.0.0.1:P`.

    `log`: a text file opened for reading and writing ("w+") that receives the server's output; a
    temporary one is used when omitted."""
    port = free_port()
    cmd = [sys.executable, "-m", "granite_asr", "serve", "--port", str(port), *serve_args]
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        if log is None:
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            deadline = time.monotonic() + ready_timeout
            while not _healthy(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{_read(log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server did not start in {ready_timeout:.0f} s:\n{_read(log)}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
