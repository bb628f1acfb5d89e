"""File wrappers of the ``.pdparams`` reader: one that refuses reads past the end of the file before allocating
for them, and one that hashes every byte read on a background thread (one pass over the file, not two).
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Optional

from ..errors import CheckpointError

class BoundedReader:
    """File wrapper that refuses reads past the known end of the file before they allocate a buffer for them."""

    def __init__(self, raw: Any, size: int) -> None:
        self._raw, self._left = raw, size

    def _claim(self, size: int) -> None:
        if size is not None and size > self._left:
            raise CheckpointError(f"the pickle declares {size} more bytes but the file has only {self._left} "
                                  "left (corrupt or truncated pickle)")

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            self._claim(size)
        data = self._raw.read(size)
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        self._claim(memoryview(buffer).nbytes)
        count = self._raw.readinto(buffer)
        self._left -= count
        return count


class BackgroundHasher:
    """Feeds a hash on a second thread, in submission order (hashlib releases the GIL on large updates, so the
    hash of a chunk overlaps the reading of the next one).

    Submitted data must not change until :meth:`finish` returns: here it is either ``bytes`` or a view of a
    fresh buffer the unpickler has just read into and never writes again. :meth:`finish` waits for the queue to
    drain and re-raises a failure of the hash thread.
    """

    _STOP = object()

    def __init__(self, hasher: Any) -> None:
        self._hasher, self._queue = hasher, queue.SimpleQueue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="pdparams-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is self._STOP:
                return
            if self._error is None:
                try:
                    self._hasher.update(data)
                except BaseException as exc:  # reported by finish(), in the reading thread
                    self._error = exc

    def update(self, data: Any) -> None:
        if data:
            self._queue.put(data)

    def finish(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error


class HashingReader:
    """File wrapper that feeds everything the unpickler reads into a hash (one pass over the file, not two); the
    hashing runs on a :class:`BackgroundHasher` thread, and :meth:`close` must be called (it joins it)."""

    def __init__(self, raw: Any, hasher: Any) -> None:
        self._raw, self._hasher = raw, BackgroundHasher(hasher)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hasher.update(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._hasher.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        self._hasher.update(memoryview(buffer)[:count])
        return count

    def peek(self, size: int = 0) -> bytes:
        return self._raw.peek(size)

    def drain(self) -> None:
        """Hash whatever follows the pickle's STOP opcode, so the digest covers the whole file."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        """Wait until every byte read so far is hashed (the caller's hasher is then final)."""
        self._hasher.finish()
