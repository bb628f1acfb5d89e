"""Micro-batching: concurrent requests share one model call, which runs off the event loop.

A :class:`MicroBatcher` owns a bounded asyncio queue and one collector task. :meth:`MicroBatcher.submit` puts
items on the queue (waiting while it is full: back-pressure, nothing is dropped) and awaits their results. The
collector takes the first waiting item, then keeps taking items until it holds ``max_batch`` of them or
``max_wait_s`` has passed since the first, and hands the batch to ``run_batch`` in the given executor (a thread
pool: the event loop keeps serving while the model computes). While one batch computes, the next one queues up, so
under load batches fill without waiting. Items whose caller went away (a cancelled request) are skipped.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Generic, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """What a batcher has done so far (reported by ``/healthz``)."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    sizes: List[int] = field(default_factory=lambda: [0] * 8)  # sizes[i]: batches of size in [2^i, 2^(i+1))

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        bucket = min(size.bit_length() - 1, len(self.sizes) - 1)
        self.sizes[bucket] += 1

    def as_dict(self) -> dict:
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest_batch,
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
                "size_histogram": {f"{2 ** i}-{2 ** (i + 1) - 1}": n for i, n in enumerate(self.sizes) if n}}


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent callers into batches of at most ``max_batch`` for ``run_batch``.

    ``run_batch(items) -> results`` (same length and order) runs in ``executor`` (which may also be set before
    :meth:`start`). If it raises, every caller of that batch gets the exception. ``max_pending`` bounds the queue
    (callers wait for room).
    """

    def __init__(self, run_batch: Callable[[List[T]], Sequence[R]], executor: Optional[Executor],
                 max_batch: int = 32,
                 max_wait_s: float = 0.005, max_pending: int = 1024, name: str = "batcher") -> None:
        if max_batch < 1 or max_pending < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_pending must be positive and max_wait_s not negative")
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_wait_s, self.max_pending, self.name = max_batch, max_wait_s, max_pending, name
        self.stats = BatchStats()
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        """Start the collector on the running loop (call from the app's startup)."""
        if self.executor is None:
            raise RuntimeError(f"{self.name}: set an executor before start()")
        self._queue = asyncio.Queue(self.max_pending)
        self._task = asyncio.create_task(self._collect(), name=self.name)

    async def stop(self) -> None:
        """Stop collecting; callers still waiting get :class:`asyncio.CancelledError`."""
        if self._task is not None:
            # Cancel until the collector has ended: a cancellation can be lost (on Python < 3.12, asyncio.wait_for
            # may return an item that arrived together with it and drop it, CPython gh-86296), and the collector
            # would then wait on the queue forever, and stop() with it (seen with results nobody awaited).
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.05)
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()

    async def submit(self, items: Sequence[T]) -> List[R]:
        """Results for ``items`` (they may be split over several batches and share them with other callers)."""
        if self._queue is None or self._task is None:
            raise RuntimeError(f"{self.name} is not running (start() it on the event loop first)")
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future = loop.create_future()
            await self._queue.put((item, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> List[Tuple[T, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(item, future) for item, future in batch if not future.done()]  # skip cancelled callers

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            items = [item for item, _ in batch]
            self.stats.record(len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for "
                                       f"{len(items)} items")
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
