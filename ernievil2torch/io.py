"""The converted-directory format: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``), written atomically.

Writes go to a hidden sibling directory that is renamed into place only when complete, so an interrupted or failed
run leaves the previous output or none. Tensors are streamed to the safetensors file one at a time, so peak memory
stays near one copy of the checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(dst: Path) -> None:
    """Delete leftovers of earlier runs that were killed (their pid is in the name and no longer alive)."""
    for leftover in dst.parent.glob(f".{dst.name}.partial-*"):
        try:
            pid = int(leftover.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(dst: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``dst``; on success it replaces ``dst``, on any failure it is removed."""
    dst = Path(dst).absolute()
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it")
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-{os.getpid()}-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
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
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: invalid config ({exc})") from None
    try:
        state = load_file(str(path / WEIGHTS_NAME), device=str(device or "cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path / WEIGHTS_NAME}: cannot read weights ({exc})") from None
    return config, state
