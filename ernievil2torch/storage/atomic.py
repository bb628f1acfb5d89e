"""Publishing files and directories atomically: a reader sees the previous output or the complete new one.

* :func:`atomic_directory` writes a directory in a hidden sibling that is renamed into place only when complete, so
  an interrupted or failed run leaves the previous output or none; the swap runs with Ctrl-C held (deferred).
* :func:`atomic_write_bytes` / :func:`atomic_save_npy` do the same for one file (write, fsync, rename).

A run killed outright (SIGKILL, power loss) leaves hidden ``.DST.partial-PID-*`` / ``.DST.old-PID-*`` /
``.DST.trash-PID-*`` siblings that the next run for the same destination cleans up (their pid is no longer alive).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from .outputs import check_output_dir, check_output_path


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we wrote: leave the directory alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _leftovers(dst: Path, kind: str) -> Iterator[Tuple[Path, int]]:
    """Hidden siblings ``.DST.<kind>-PID-xxxx`` and their pid (plain prefix match: DST may contain glob chars)."""
    prefix = f".{dst.name}.{kind}-"
    try:
        entries = list(dst.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text, _, rest = entry.name[len(prefix):].partition("-")
        if pid_text.isdigit() and rest:
            yield entry, int(pid_text)


def _remove_stale_partials(dst: Path) -> None:
    """Clean up after earlier runs that were killed (their pid is in the name and no longer alive).

    ``.DST.partial-PID-*`` is an unfinished output: deleted. ``.DST.old-PID-*/DST`` is a previous output a killed
    ``--overwrite`` run had moved aside just before publishing the new one: put back if DST is missing, else deleted.
    """
    for leftover, pid in _leftovers(dst, "old"):
        if _pid_alive(pid):
            continue
        kept = leftover / dst.name
        if not os.path.lexists(dst) and kept.is_dir():
            with contextlib.suppress(OSError):
                os.replace(kept, dst)
        _discard(leftover, dst)
    for kind in ("partial", "trash"):
        for leftover, pid in _leftovers(dst, kind):
            if not _pid_alive(pid):
                shutil.rmtree(leftover, ignore_errors=True)


def _discard(path: Path, dst: Path) -> None:
    """Delete ``path`` after renaming it to ``.DST.trash-PID-*``.

    A deletion killed half-way then leaves a *trash* directory, never a half-deleted *old* one that a later run
    would mistake for a complete previous output and restore.
    """
    trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.trash-{os.getpid()}-", dir=dst.parent))
    try:
        os.replace(path, trash / "x")
    except OSError:
        trash.rmdir()
        shutil.rmtree(path, ignore_errors=True)
        return
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while the output is swapped in, so Ctrl-C cannot split the renames.

    Blocking with ``pthread_sigmask`` is not enough: torch's worker threads would take the signal instead. So the
    Python-level handlers are swapped for one that only notes the signal, which is re-raised afterwards.
    """
    pending: List[int] = []
    previous: Dict[int, object] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None:
                previous[signum] = signal.signal(signum, lambda num, frame: pending.append(num))
    except ValueError:  # not the main thread: Python runs no handlers here anyway
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _publish(tmp: Path, dst: Path) -> None:
    # Signals are held for the whole swap, removal of the old copy included: a Ctrl-C is raised only afterwards,
    # when there is nothing left to clean up (raised inside rmtree it would strand a half-deleted .old directory).
    with _signals_deferred():
        if not os.path.lexists(dst):
            os.replace(tmp, dst)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-{os.getpid()}-", dir=dst.parent))
        os.replace(dst, old / dst.name)
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.replace(old / dst.name, dst)  # put the previous output back
            raise
        finally:
            _discard(old, dst)


@contextlib.contextmanager
def atomic_directory(dst: Union[str, Path], overwrite: bool = False,
                     inputs: Iterable[Optional[Union[str, Path]]] = ()) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``dst``; on success it replaces ``dst``, on any failure it is removed.

    ``dst`` is first checked by :func:`~ernievil2torch.storage.outputs.check_output_dir` (never an empty path, the
    current directory or a folder above it, the root, one of ``inputs`` or a folder holding one; an existing ``dst``
    only with ``overwrite``).

    A run killed outright (SIGKILL, power loss) leaves a hidden ``.DST.partial-PID-*`` (or, in the instant between
    the two renames of ``--overwrite``, ``.DST.old-PID-*``) that the next run for the same DST cleans up.
    """
    check_output_path(dst, inputs)
    if Path(dst).absolute().parent.is_dir():
        _remove_stale_partials(Path(dst).absolute())  # may put back a previous output: checked next
    check_output_dir(dst, overwrite, inputs)
    dst = Path(dst).absolute()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-{os.getpid()}-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _publish(tmp, dst)
    except BaseException:  # KeyboardInterrupt included: never leave the partial directory behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yield a file opened on a hidden sibling of ``path``; on success it is fsync'ed and renamed over ``path``,
    on any failure (Ctrl-C included) it is removed, so ``path`` holds the previous content or the complete new."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)
def atomic_save_npy(path: Union[str, Path], array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as handle:
        np.save(handle, array)
