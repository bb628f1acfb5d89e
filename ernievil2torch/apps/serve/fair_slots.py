"""At most N holders at a time, granted strictly in arrival order: the gate in front of the photo library's database
searches (``serve --db_searches``).

Why not :class:`threading.BoundedSemaphore`: a released semaphore is open to whichever thread asks next, so a search
arriving just then overtakes the ones already waiting, and a waiter that was woken but overtaken goes back to the
end of the queue. Under a steady load of slow searches (Milvus Lite at a million rows: seconds each, every one
holding the interpreter lock for most of it) that leaves a few requests waiting far longer than the rest: the
load run's p99, and its client timeouts. Here a released slot is handed straight to the oldest waiter, so every
search waits for exactly the ones that arrived before it.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Deque

from ...errors import InputError


class FairSlots:
    """``with slots:`` runs the block once one of ``count`` slots is this thread's; waiters get slots first come,
    first served (a slot freed while others wait goes to the oldest of them, never to a newcomer)."""

    def __init__(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"a positive number of slots is needed, got {count!r}")
        self.count = count
        self._lock = threading.Lock()
        self._free = count
        self._queue: Deque[threading.Event] = deque()

    @property
    def waiting(self) -> int:
        """Threads waiting for a slot now."""
        with self._lock:
            return len(self._queue)

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                return
            turn = threading.Event()
            self._queue.append(turn)
        try:
            turn.wait()  # set by release(): the slot was handed over, nothing to take
        except BaseException:  # interrupted while waiting: give back a slot handed over meanwhile, or leave the queue
            with self._lock:
                handed = turn.is_set()
                if not handed:
                    self._queue.remove(turn)
            if handed:
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().set()
            elif self._free < self.count:
                self._free += 1
            else:
                raise RuntimeError("FairSlots released more often than acquired")

    def __enter__(self) -> "FairSlots":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
