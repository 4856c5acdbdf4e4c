"""Dynamic batching for the server: windows of concurrent requests share `Engine.run` calls on ONE thread.

The model is not thread-safe, so exactly one worker thread ever touches it (issue 5 §3). Each HTTP request
runs the ordinary long-form pipeline (`transcribe.pipeline.transcribe`: decode, VAD windows, alignment,
segments) in its own pool thread, against a `RequestEngine`: a stand-in whose `run` does not decode but
queues the request's windows here and waits for their results. The worker collects rows (windows) from
every waiting request, up to `max_batch` rows or until the oldest row has waited `max_wait` seconds, and
hands them to the real engine in one call; the engine then buckets them by length (`engine/batching.py`).
So long audio of one request and short clips of others ride in the same batches (PEERS §5.6: batch many
inputs, not one at a time), and everything above the engine stays shared with the CLI.

Rows only share a call when their engine-relevant options are equal (`engine_key`): task, languages,
keywords, speakers and decoding. A request with many windows does not starve the others: rows are taken
round-robin across compatible requests, oldest first.

Backpressure and cancellation (issue 5 §3):
- `admit()` gives a `Ticket` or raises `QueueFull` once `max_queue` requests are in flight (→ 429);
  a ticket is released only when its pipeline thread has really finished, so abandoned work still counts.
- `Ticket.cancel()` (client gone, timeout) drops the request's queued rows at once; rows already inside
  the engine finish and are discarded. The waiting pipeline thread gets `Cancelled` and ends.
- An engine error fails only the requests whose rows caused it: a failing shared call is retried one
  request at a time, so one bad request never fails its batch neighbours, nor stops the worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..options import TranscribeOptions
from .metrics import Metrics

SAMPLE_RATE = 16000


class QueueFull(Exception):
    """`max_queue` requests are already in flight."""


class Cancelled(Exception):
    """The request went away (client disconnect, timeout, shutdown); its queued work was dropped."""


class Ticket:
    """One admitted request: its cancellation flag and its slot in the queue."""

    def __init__(self, scheduler: Scheduler):
        self._scheduler = scheduler
        self._cancelled = threading.Event()
        self._released = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._scheduler._drop(self)


def engine_key(options: TranscribeOptions) -> TranscribeOptions:
    """The options with the fields that only the pipeline reads neutralised: equal keys may share a call.

    Every other field (including any added later) keeps requests apart, so a new option can only make
    sharing rarer, never wrong.
    """
    return dataclasses.replace(options, word_timestamps=False, progress=False, vad=True, chunk_seconds=30.0)


@dataclass(eq=False)
class _Job:
    """One `RequestEngine.run` call: a request's group of windows."""

    audios: list[np.ndarray]
    options: TranscribeOptions
    ticket: Ticket
    arrived: float
    key: TranscribeOptions = field(init=False)
    future: Future = field(default_factory=Future)
    results: list = field(init=False)
    taken: int = 0  # rows handed to the engine so far

    def __post_init__(self) -> None:
        self.key = engine_key(self.options)
        self.results = [None] * len(self.audios)

    @property
    def waiting(self) -> int:
        return len(self.audios) - self.taken


class Scheduler:
    """Queue of windows from concurrent requests, served by one engine worker thread.

    engine: a `granite_asr.engine.engine.Engine` (needs `run(audios, options, on_batch=)` and `check`).
    max_batch: rows per engine call, at most. max_wait: seconds the oldest row may wait for company.
    max_queue: requests in flight (queued or running), at most.
    """

    def __init__(self, engine, *, max_batch: int, max_wait: float, max_queue: int, metrics: Metrics):
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait >= 0")
        self.engine = engine
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.metrics = metrics
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []  # jobs with rows not yet handed to the engine, oldest first
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ request side
    def admit(self) -> Ticket:
        with self._cond:
            if self._in_flight >= self.max_queue:
                raise QueueFull(f"server busy: {self._in_flight} requests in flight (max {self.max_queue})")
            self._in_flight += 1
            self.metrics.set_gauge("queue_depth", self._in_flight)
            return Ticket(self)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            if not ticket._released:
                ticket._released = True
                self._in_flight -= 1
                self.metrics.set_gauge("queue_depth", self._in_flight)

    def submit(self, audios: Sequence[np.ndarray], options: TranscribeOptions, ticket: Ticket) -> Future:
        job = _Job(list(audios), options, ticket, time.monotonic())
        with self._cond:
            if ticket.cancelled or self._stopping:
                raise Cancelled("request cancelled")
            if not job.audios:
                job.future.set_result([])
                return job.future
            self._jobs.append(job)
            self._update_queued()
            self._cond.notify_all()
        return job.future

    def _drop(self, ticket: Ticket) -> None:
        """Fail and forget the ticket's jobs that still wait for the engine."""
        with self._cond:
            dropped = [j for j in self._jobs if j.ticket is ticket]
            for job in dropped:
                self.metrics.inc("dropped_windows_total", job.waiting)
                self._jobs.remove(job)
                if not job.future.done():
                    job.future.set_exception(Cancelled("request cancelled"))
            self._update_queued()
            self._cond.notify_all()

    def _update_queued(self) -> None:
        self.metrics.set_gauge("queued_windows", sum(j.waiting for j in self._jobs))

    # ------------------------------------------------------------------ worker side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="granite-asr-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            for job in self._jobs:
                if not job.future.done():
                    job.future.set_exception(Cancelled("server shutting down"))
            self._jobs.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            rows = self._next_rows()
            if rows is None:
                return
            self._run(rows)

    def _next_rows(self) -> list[tuple[_Job, int]] | None:
        """Block until a batch is due: `max_batch` compatible rows, or the oldest row waited `max_wait`."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if not self._jobs:
                    self._cond.wait()
                    continue
                head = self._jobs[0]
                compatible = [j for j in self._jobs if j.key == head.key]
                due = head.arrived + self.max_wait
                now = time.monotonic()
                if sum(j.waiting for j in compatible) >= self.max_batch or now >= due:
                    return self._take(compatible)
                self._cond.wait(due - now)

    def _take(self, jobs: list[_Job]) -> list[tuple[_Job, int]]:
        """Up to `max_batch` rows, round-robin over `jobs` (oldest first). Caller holds the lock."""
        rows: list[tuple[_Job, int]] = []
        while len(rows) < self.max_batch and any(j.waiting for j in jobs):
            for job in jobs:
                if job.waiting and len(rows) < self.max_batch:
                    rows.append((job, job.taken))
                    job.taken += 1
        self._jobs = [j for j in self._jobs if j.waiting]
        self._update_queued()
        return rows

    def _run(self, rows: list[tuple[_Job, int]]) -> None:
        """One engine call for `rows`; on failure, each request's rows again on their own."""
        try:
            results = self._engine_call(rows)
        except Exception as error:  # noqa: BLE001 (any engine failure must not end the worker)
            jobs = list(dict.fromkeys(j for j, _ in rows))
            if len(jobs) == 1:
                self._fail(jobs[0], error)
                return
            for job in jobs:  # find the culprit: the others still get their results
                mine = [(j, i) for j, i in rows if j is job]
                try:
                    self._deliver(mine, self._engine_call(mine))
                except Exception as e:  # noqa: BLE001
                    self._fail(job, e)
            return
        self._deliver(rows, results)

    def _engine_call(self, rows: list[tuple[_Job, int]]) -> list:
        audios = [j.audios[i] for j, i in rows]
        done = [0]

        def on_batch(finished: int, total: int) -> None:  # one call per forward batch of the engine
            self.metrics.observe("batch_size", finished - done[0])
            done[0] = finished

        start = time.perf_counter()
        results = self.engine.run(audios, rows[0][0].options, on_batch=on_batch)
        busy = time.perf_counter() - start
        self.metrics.inc("engine_busy_seconds_total", busy)
        self.metrics.inc("engine_audio_seconds_total", sum(len(a) for a in audios) / SAMPLE_RATE)
        self.metrics.observe("dispatch_rows", len(rows))
        return results

    def _deliver(self, rows: list[tuple[_Job, int]], results: list) -> None:
        with self._cond:
            for (job, i), result in zip(rows, results, strict=True):
                job.results[i] = result
                if job.future.done():
                    continue  # cancelled while its rows ran
                if all(r is not None for r in job.results):
                    job.future.set_result(job.results)

    def _fail(self, job: _Job, error: Exception) -> None:
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._update_queued()
            if not job.future.done():
                job.future.set_exception(error)


class RequestEngine:
    """What the pipeline sees as its engine for one request: `run` queues windows on the scheduler.

    `check` is the real engine's (pure validation). The pipeline thread blocks in `run` until the
    request's rows are decoded, or raises `Cancelled` as soon as the ticket is cancelled.
    """

    def __init__(self, scheduler: Scheduler, ticket: Ticket):
        self.scheduler, self.ticket = scheduler, ticket

    def check(self, options: TranscribeOptions) -> str:
        return self.scheduler.engine.check(options)

    def run(
        self,
        audios: Sequence[np.ndarray],
        options: TranscribeOptions | None = None,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list:
        options = options or TranscribeOptions()
        results = self.scheduler.submit(audios, options, self.ticket).result()
        if on_batch is not None:
            on_batch(len(results), len(results))
        return results
