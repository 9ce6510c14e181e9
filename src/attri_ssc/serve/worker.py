"""One thread for every model call, off the event loop.

The model, its caches and torch's autograd state are not safe to use from two threads at
once, and two interleaved edits would also just compete for the same cores. Every call
that touches the run therefore goes through :class:`ModelWorker`: a single worker thread that
runs jobs one at a time, in arrival order, while the event loop keeps answering (gallery,
static files, other clients' queued requests).

Stale slider requests: the page sends at most one edit at a time and only the latest slider
value (``static/app.js``). On the server, an edit may carry a ``session`` and a ``seq``;
:meth:`ModelWorker.supersede` records the newest ``seq`` of each session as requests arrive,
and a job whose ``seq`` is older than its session's newest when it reaches the worker is
skipped (answered ``{"superseded": true}``, not an error), so a client that fires requests
faster than the model answers never builds a queue.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """The job was skipped: a newer request of the same session arrived while it waited."""


class ModelWorker:
    """Runs callables one at a time on one dedicated thread (module doc)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attri-ssc-model")
        self._latest: dict[str, int] = {}
        self._lock = threading.Lock()
        self.jobs_run = 0
        self.jobs_skipped = 0

    def supersede(self, session: str | None, seq: int | None) -> None:
        """Record that ``session`` sent request ``seq`` (call when the request arrives)."""
        if session is None or seq is None:
            return
        with self._lock:
            if seq > self._latest.get(session, -1):
                self._latest[session] = seq
            if len(self._latest) > 10_000:  # forget idle sessions rather than grow without bound
                self._latest = {session: self._latest[session]}

    def _is_stale(self, session: str | None, seq: int | None) -> bool:
        if session is None or seq is None:
            return False
        with self._lock:
            return seq < self._latest.get(session, -1)

    async def run(self, fn: Callable[..., T], *args: Any, session: str | None = None, seq: int | None = None) -> T:
        """Run ``fn(*args)`` on the worker thread and await its result.

        Raises:
            Superseded: when ``session``/``seq`` are given and a newer request of the session
                arrived before this job started.
        """

        def job() -> T:
            if self._is_stale(session, seq):
                self.jobs_skipped += 1
                raise Superseded()
            self.jobs_run += 1
            return fn(*args)

        return await asyncio.wrap_future(self._executor.submit(job))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and wait (for synchronous callers: startup, tests)."""
        return self._executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
