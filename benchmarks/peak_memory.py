"""Resident memory of other processes during a benchmark: sampled on a thread (psutil), and the kernel's own peak.

A process is watched under a name with its children (their resident sets added: a process's memory is what it
and what it started hold). Two peaks are kept per name: the largest sample (every ``interval`` seconds, so a spike
between two samples can be missed) and, read by :meth:`PeakMemory.finish` while the process still runs, the
kernel's high-water mark of the process itself (``VmHWM`` in ``/proc/PID/status``: every peak counted, children
not included; Linux only, else None).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional

import psutil

MIB = 1024 * 1024


@dataclass
class Watched:
    name: str
    pid: int
    sampled_peak: int = 0  # bytes: the process and its children
    at_end: Optional[int] = None  # bytes, when finish() ran
    kernel_peak: Optional[int] = None  # bytes: VmHWM of the process itself
    children: int = 0  # the most children seen at once
    finished: bool = False


class PeakMemory:
    """Samples every watched process until :meth:`stop`; use as a context manager."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.watched: Dict[str, Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.watched[name] = Watched(name, pid)
        self._sample(self.watched[name])

    def finish(self, name: str) -> Watched:
        """Take the last sample of ``name`` and its kernel peak (call it before the process ends); it is then no
        longer sampled."""
        entry = self.watched[name]
        with self._lock:
            entry.at_end = self._sample(entry)
            entry.kernel_peak = _vm_hwm(entry.pid)
            entry.finished = True
        return entry

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for entry in self.watched.values():
                    if not entry.finished:
                        self._sample(entry)

    @staticmethod
    def _sample(entry: Watched) -> Optional[int]:
        try:
            process = psutil.Process(entry.pid)
            family: List[psutil.Process] = [process, *process.children(recursive=True)]
            total = 0
            for member in family:
                try:
                    total += member.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        entry.sampled_peak = max(entry.sampled_peak, total)
        entry.children = max(entry.children, len(family) - 1)
        return total


def _vm_hwm(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def mib(value: Optional[int]) -> str:
    """``value`` bytes as whole MiB ('-' for None)."""
    return "-" if value is None else f"{value / MIB:,.0f} MiB"
