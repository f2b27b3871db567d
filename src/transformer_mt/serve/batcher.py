"""Dynamic batching: requests that arrive close together share one model call.

A background task takes the oldest queued job, waits up to ``batch_window_ms`` for
more jobs with the same decoding options (or until the token or request cap is
reached), and runs them as one call in a worker thread, so the event loop keeps
accepting requests meanwhile. Jobs that queue up during a call form the next batch,
which is why throughput grows with load. A job whose caller gave up (timeout or
disconnect) before its batch started is taken off the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .config import ServeConfig

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The server cannot take the job now (queue full or shutting down)."""


@dataclass(eq=False)
class Job:
    """One request's work. Jobs share a model call only when their keys are equal."""

    key: Hashable
    payload: Any
    tokens: int
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchStats:
    """Counters shown by /health: they prove that batching happens."""

    batches: int = 0  # model calls
    requests: int = 0  # jobs answered by those calls
    largest_batch: int = 0  # most jobs in one call
    dropped: int = 0  # jobs withdrawn before their batch started
    failed: int = 0  # jobs whose model call raised


RunBatch = Callable[[list[Job]], list[Any]]


class Batcher:
    """Queue jobs, run them in batches with ``run`` (called in a worker thread with
    a list of jobs; returns one result per job, in order)."""

    def __init__(self, run: RunBatch, config: ServeConfig) -> None:
        self._run = run
        self.config = config
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="transformer-mt")
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.waiting = 0  # submitted jobs not yet answered or given up

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Refuse new jobs, finish every queued one, then stop the worker."""
        self._closing = True
        if self._task is not None:
            self._arrived.set()
            await self._task
        self._executor.shutdown(wait=True)
        log.info("batcher stopped after %d batches", self.stats.batches)

    async def submit(self, key: Hashable, payload: Any, tokens: int, timeout: float):
        """Queue a job and wait for its result; raises TimeoutError after
        ``timeout`` seconds. A job given up before it started leaves the queue."""
        if self._closing:
            raise ServiceUnavailable("the server is shutting down")
        if len(self._queue) >= self.config.max_queue:
            raise ServiceUnavailable(
                f"the queue is full ({self.config.max_queue} requests); retry later"
            )
        job = Job(key, payload, tokens, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._arrived.set()
        self.waiting += 1
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except (TimeoutError, asyncio.TimeoutError, asyncio.CancelledError):
            self._withdraw(job)
            raise
        finally:
            self.waiting -= 1

    def _withdraw(self, job: Job) -> None:
        try:
            self._queue.remove(job)
        except ValueError:
            job.future.cancel()  # already running: its result is thrown away
            return
        self.stats.dropped += 1

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                return
            await self._execute(batch)

    async def _collect(self) -> list[Job]:
        """The next batch; empty once closing with nothing left to do."""
        while not self._queue:
            if self._closing:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.batch_window_ms / 1000
        batch = [self._queue.popleft()]
        while True:
            self._take_matching(batch)
            remaining = deadline - loop.time()
            if self._full(batch) or remaining <= 0 or self._closing:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    def _full(self, batch: list[Job]) -> bool:
        return (
            len(batch) >= self.config.max_batch_requests
            or sum(job.tokens for job in batch) >= self.config.max_batch_tokens
        )

    def _take_matching(self, batch: list[Job]) -> None:
        """Move queued jobs with the batch's key into it while the caps allow."""
        tokens = sum(job.tokens for job in batch)
        kept: deque[Job] = deque()
        for job in self._queue:
            fits = (
                len(batch) < self.config.max_batch_requests
                and tokens + job.tokens <= self.config.max_batch_tokens
            )
            if job.key == batch[0].key and fits:
                batch.append(job)
                tokens += job.tokens
            else:
                kept.append(job)
        self._queue = kept

    async def _execute(self, batch: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, batch)
        except Exception as exc:
            if len(batch) > 1:
                # One bad job must not fail its neighbours: retry them one by one.
                for job in batch:
                    await self._execute([job])
                return
            self.stats.failed += 1
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self._count(batch)
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _count(self, batch: list[Job]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
