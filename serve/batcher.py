"""Dynamic batching across requests, as Triton's dynamic batcher does it.

Requests' decoded images join one queue. A batch leaves the queue when it is full (the artifact's batch
size), or when its oldest image has waited `max_wait` and the backend is idle. It waits a little longer
(a quarter of a batch's run time, at most 1 s) while more images are on their way: admitted ones still
decoding, or the clients of a larger last batch sending their next request. While one batch runs, the next
full one is already stacked and normalized (`pipeline` batches in flight; the backend itself runs one at a
time). Admission is bounded: images decoding or waiting never exceed `max_queue`; past it a request is
refused at once (`QueueFull`, with an estimate of when to retry) instead of growing a backlog. Results go
back to each request's own futures, in its order; a failing batch is re-run request by request so that one
request's failure never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The bounded queue cannot admit a request now."""

    def __init__(self, retry_after: float):
        super().__init__(f"queue full; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class NonFiniteOutput(Exception):
    """The backend produced NaN/Inf for an image."""


@dataclass(eq=False)
class Ticket:
    """One request's admission: how many of its images still count against the queue bound."""

    remaining: int


@dataclass(eq=False)
class _Item:
    pixels: np.ndarray
    ticket: Ticket
    future: asyncio.Future
    enqueued: float


class Admission:
    """The queue bound both batchers share: at most `max_queue` images admitted (decoding or waiting) at once,
    published as the queue_depth gauge. A ticket's images leave the count as they are batched (see
    DynamicBatcher), the rest when the request ends."""

    def __init__(self, max_queue: int, metrics=None):
        self.max_queue, self.metrics = max_queue, metrics
        self._admitted = 0

    @contextlib.contextmanager
    def admit(self, n: int):
        """Reserve `n` places in the queue for one request, or raise QueueFull."""
        if self._admitted + n > self.max_queue:
            raise QueueFull(self.retry_after())
        ticket = Ticket(n)
        self._change_admitted(n)
        try:
            yield ticket
        finally:
            self._change_admitted(-ticket.remaining)
            ticket.remaining = 0

    def retry_after(self) -> float:
        return 1.0

    @property
    def depth(self) -> int:
        return self._admitted

    def _change_admitted(self, delta: int) -> None:
        self._admitted += delta
        if self.metrics:
            self.metrics.queue_depth.set(self._admitted)


class DynamicBatcher(Admission):
    """Groups images of concurrent requests into backend batches; see the module docstring."""

    def __init__(self, prepare: Callable[[list[np.ndarray]], np.ndarray], infer: Callable[[np.ndarray], np.ndarray],
                 *, max_batch: int, max_wait_s: float, max_queue: int, pipeline: int = 2, metrics=None):
        super().__init__(max_queue, metrics)
        self.prepare, self.infer = prepare, infer
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.pipeline = pipeline
        self._queue: list[_Item] = []
        self._running = 0
        self._rate = 0.0  # images/s of recent batches, for Retry-After
        self._batch_seconds = 0.0  # recent backend time per batch
        self._last_batch = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._backend_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=pipeline, thread_name_prefix="ijepa-serve-batch")

    # ------------------------------------------------------------------ requests

    async def embed(self, arrays: list[np.ndarray], ticket: Ticket) -> np.ndarray:
        """(len(arrays), D) embeddings of one admitted request's images, in order."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [_Item(a, ticket, loop.create_future(), now) for a in arrays]
        self._queue.extend(items)
        self._wakeup.set()
        return np.stack(await asyncio.gather(*(item.future for item in items)))

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained, from the recent throughput (1..60)."""
        return min(60.0, max(1.0, self._admitted / self._rate if self._rate > 0 else 1.0))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ijepa-serve-batcher")

    async def stop(self) -> None:
        """Run what is queued, then stop."""
        self._stopping = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            group = await self._next_group()
            if group is None:
                break
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(group))
        while self._running:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _next_group(self) -> list[_Item] | None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = None
            n = len(self._queue)
            if n == 0 and self._stopping:
                return None
            if self._running < self.pipeline and n:
                if n >= self.max_batch:
                    return self._pop()
                # A partial batch waits for more images only while the backend is idle and its oldest
                # image is younger than max_wait, plus a grace when more are on their way: admitted
                # images still decoding, or clients of the last, larger batch sending their next
                # request. When the backend is busy, the queue simply fills up meanwhile.
                if self._running == 0:
                    coming = self._admitted > n or n < self._last_batch
                    wait = self.max_wait_s + (self._grace() if coming else 0.0)
                    timeout = self._queue[0].enqueued + wait - loop.time()
                    if timeout <= 0 or self._stopping:
                        return self._pop()
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _grace(self) -> float:
        """How long a partial batch may wait for images on their way: a quarter of a recent batch's run
        time (at most 1 s), small next to the run it fills."""
        return min(1.0, 0.25 * self._batch_seconds)

    def _pop(self) -> list[_Item]:
        group, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        self._last_batch = len(group)
        now = asyncio.get_running_loop().time()
        for item in group:
            item.ticket.remaining -= 1
            if self.metrics:
                self.metrics.queue_seconds.observe(now - item.enqueued)
        self._change_admitted(-len(group))
        return group

    async def _run(self, group: list[_Item]) -> None:
        try:
            await self._run_group(group, isolate=len({id(item.ticket) for item in group}) > 1)
        except Exception:  # a bug in the loop itself: fail the group rather than hang its requests
            log.exception("batch failed")
            _fail(group, RuntimeError("internal error while running the batch"))
        finally:
            self._running -= 1
            self._wakeup.set()

    async def _run_group(self, group: list[_Item], isolate: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._pool, self._compute, [item.pixels for item in group])
        except Exception as exc:
            if not isolate:
                _fail(group, exc)
                return
            log.warning("batch of %d images failed (%s); re-running it request by request", len(group), exc)
            by_ticket: dict[int, list[_Item]] = {}
            for item in group:
                by_ticket.setdefault(id(item.ticket), []).append(item)
            for items in by_ticket.values():
                await self._run_group(items, isolate=False)
            return
        for item, row in zip(group, vectors):
            if item.future.done():
                continue
            if np.isfinite(row).all():
                item.future.set_result(row)
            else:
                item.future.set_exception(NonFiniteOutput("the model produced NaN/Inf for this image"))

    def _compute(self, arrays: list[np.ndarray]) -> np.ndarray:
        pixels = self.prepare(arrays)  # outside the lock: overlaps the running batch
        with self._backend_lock:
            start = time.perf_counter()
            vectors = self.infer(pixels)
            seconds = time.perf_counter() - start
        first = self._rate == 0
        self._rate = len(arrays) / seconds if first else 0.8 * self._rate + 0.2 * len(arrays) / seconds
        self._batch_seconds = seconds if first else 0.8 * self._batch_seconds + 0.2 * seconds
        if self.metrics:
            self.metrics.batch_done(len(arrays), seconds)
        return vectors


def _fail(items: list[_Item], exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
