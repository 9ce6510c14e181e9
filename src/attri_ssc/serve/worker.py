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

Background work: when an image is selected under the ``feedback`` rule, the explorer queues the
rule's per-image step searches (one job per attribute) with :meth:`ModelWorker.background`. Those
jobs run only when no request is waiting (a priority queue: requests first, in arrival order,
except that a request starting a step search may be overtaken by a few later requests, then
background jobs; a client whose steps are searched does not wait behind other clients' queued
searches, and no search starves), so a search started ahead of time delays a slider move by at most the one
search already running, and the first move of a slider usually finds its steps searched.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """The job was skipped: a newer request of the same session arrived while it waited."""


class ModelWorker:
    """Runs callables one at a time on one dedicated thread (module doc)."""

    #: Kinds of job: a request; a request that starts a long search (a slider's first move under
    #: ``feedback``); a background job. Requests run in arrival order, except that a search may be
    #: overtaken by at most :attr:`SEARCH_OVERTAKE` later requests (a quick request does not wait a
    #: whole search, and a search is never starved); background jobs run when nothing else waits.
    REQUEST, SEARCH, BACKGROUND = 0, 1, 2
    SEARCH_OVERTAKE = 8

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._latest: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.jobs_run = 0
        self.jobs_skipped = 0
        self.background_run = 0
        self._thread = threading.Thread(target=self._loop, name="attri-ssc-model", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the waiting request
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _submit(self, priority: int, fn: Callable[[], T]) -> "Future[T]":
        if self._closed:
            raise RuntimeError("the model worker is shut down")
        future: Future = Future()
        order = next(self._order)
        if priority == self.SEARCH:
            key = (0, order + self.SEARCH_OVERTAKE + 0.5)  # after the SEARCH_OVERTAKE-th later request
        else:
            key = (1 if priority == self.BACKGROUND else 0, order)
        self._queue.put((key, order, (fn, future)))
        return future

    def background(self, fn: Callable[..., Any], *args: Any) -> "Future[Any]":
        """Queue ``fn(*args)`` behind every request (module doc); its errors stay in the future."""

        def job() -> Any:
            self.background_run += 1
            return fn(*args)

        return self._submit(self.BACKGROUND, job)

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

    async def run(self, fn: Callable[..., T], *args: Any, session: str | None = None, seq: int | None = None,
                  priority: int = REQUEST) -> T:
        """Run ``fn(*args)`` on the worker thread and await its result (``priority``: :attr:`REQUEST`,
        or :attr:`SEARCH` for a request that starts a long search, so that quick requests queued
        behind it are answered first).

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

        return await asyncio.wrap_future(self._submit(priority, job))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and wait (for synchronous callers: startup, tests)."""
        return self._submit(self.REQUEST, lambda: fn(*args)).result()

    def shutdown(self) -> None:
        """Cancel the jobs still queued, finish the running one, stop the thread."""
        self._closed = True
        while True:
            try:
                _, _, job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1].cancel()
        self._queue.put(((0, -1), -1, None))
        self._thread.join()
