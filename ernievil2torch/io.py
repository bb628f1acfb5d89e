"""The converted-directory format: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``), written atomically.

Writes go to a hidden sibling directory that is renamed into place only when complete, so an interrupted or failed
run leaves the previous output or none. Tensors are streamed to the safetensors file one at a time, so peak memory
stays near one copy of the checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import struct
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from .config import ErnieViL2Config
from .errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}

TensorSpec = Tuple[str, torch.dtype, Tuple[int, ...]]


def write_safetensors_streaming(path: Union[str, Path], specs: List[TensorSpec],
                                produce: Callable[[str], torch.Tensor],
                                metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write a safetensors file from shapes known up front, asking ``produce(name)`` for one tensor at a time."""
    header: Dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, dtype, shape in specs:
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for name, dtype, shape in specs:
            tensor = produce(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise RuntimeError(f"{name}: produced {tensor.dtype} {tuple(tensor.shape)}, "
                                   f"planned {dtype} {tuple(shape)}")
            handle.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        handle.flush()
        os.fsync(handle.fileno())


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
def atomic_directory(dst: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``dst``; on success it replaces ``dst``, on any failure it is removed.

    A run killed outright (SIGKILL, power loss) leaves a hidden ``.DST.partial-PID-*`` (or, in the instant between
    the two renames of ``--overwrite``, ``.DST.old-PID-*``) that the next run for the same DST cleans up.
    """
    dst = Path(dst).absolute()
    if dst.parent.is_dir():
        _remove_stale_partials(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it")
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-{os.getpid()}-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _publish(tmp, dst)
    except BaseException:  # KeyboardInterrupt included: never leave the partial directory behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_model_dir(dst: Union[str, Path], config: ErnieViL2Config, state: Mapping[str, torch.Tensor],
                    overwrite: bool = False, vocab_file: Optional[Union[str, Path]] = None,
                    metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Save an in-memory state dict as a converted directory (atomically)."""
    specs = [(name, t.dtype, tuple(t.shape)) for name, t in state.items()]
    with atomic_directory(dst, overwrite) as tmp:
        config.save(tmp / CONFIG_NAME)
        write_safetensors_streaming(tmp / WEIGHTS_NAME, specs, lambda name: state[name].detach().cpu(), metadata)
        if vocab_file is not None:
            shutil.copyfile(vocab_file, tmp / VOCAB_NAME)
    return Path(dst)


def _validate_config(config: ErnieViL2Config) -> None:
    """Reject a config.json whose values could not describe a network (wrong types, zero sizes, ...)."""
    if not isinstance(config.has_temperature, bool) or not isinstance(config.model_type, str):
        raise ValueError("has_temperature must be true/false and model_type a string")
    for part in (config.text, config.vision):
        for item in dataclasses.fields(part):
            value = getattr(part, item.name)
            if item.name.endswith("eps"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                    raise ValueError(f"{item.name} = {value!r} is not a small positive number")
            elif isinstance(value, bool) or not isinstance(value, int) or value < (0 if item.name == "pad_token_id"
                                                                                   else 1):
                raise ValueError(f"{item.name} = {value!r} is not a valid size")
    for part in (config.text, config.vision):
        if part.hidden_size % part.num_heads:
            raise ValueError(f"hidden_size {part.hidden_size} is not a multiple of num_heads {part.num_heads}")
    if config.text.pad_token_id >= config.text.vocab_size:
        raise ValueError("pad_token_id is outside the vocabulary")
    if config.vision.image_size % config.vision.patch_size:
        raise ValueError("image_size is not a multiple of patch_size")


def read_model_dir(path: Union[str, Path], device: Union[str, torch.device, None] = None
                   ) -> Tuple[ErnieViL2Config, Dict[str, torch.Tensor]]:
    """Read ``config.json`` and the safetensors weights (no pickle involved)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file() and path.name == WEIGHTS_NAME:
        path = path.parent
    if not path.is_dir():
        hint = " (a .pdparams must be converted first: python convert.py --src ... --dst ...)" \
            if path.suffix == ".pdparams" else ""
        raise CheckpointError(f"{path}: not a converted model directory{hint}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}; is this a directory written by convert.py?")
    try:
        config = ErnieViL2Config.load(path / CONFIG_NAME)
        _validate_config(config)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: invalid config ({str(exc)[:300]})") from None
    except OSError as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: cannot read ({exc.strerror or exc})") from None
    try:
        state = load_file(str(path / WEIGHTS_NAME), device=str(device or "cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path / WEIGHTS_NAME}: cannot read weights ({exc})") from None
    return config, state
