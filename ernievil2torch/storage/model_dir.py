"""The converted-directory format: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``), written atomically.

A directory is published with :func:`~ernievil2torch.storage.atomic.atomic_directory` (the previous output or the
complete new one, never a mix). Tensors are streamed into the safetensors file one at a time, so converting keeps
peak memory near one copy of the checkpoint. Reading uses safetensors only: no pickle is ever involved.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..config import ErnieViL2Config, check_config
from ..constants import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME
from ..errors import CheckpointError
from .atomic import atomic_directory

if TYPE_CHECKING:  # torch is imported where tensors are read or written, so the converter runs without it
    import torch

#: safetensors dtype name -> bytes per element. BF16 data is handed over as its uint16 bits.
ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}

#: One tensor of a safetensors file planned up front: name, safetensors dtype name (``"F32"``...), shape.
TensorSpec = Tuple[str, str, Tuple[int, ...]]


def _tensor_header(specs: List[TensorSpec], metadata: Optional[Mapping[str, str]]) -> bytes:
    """The length-prefixed JSON header, padded with spaces so tensor data starts 8-byte aligned."""
    header: Dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, dtype, shape in specs:
        size = int(np.prod(shape, dtype=np.int64)) * ST_ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def _little_endian_bytes(array: np.ndarray, name: str, dtype: str, shape: Tuple[int, ...]) -> memoryview:
    """The array's data as safetensors stores it (C order, little-endian), without a copy when it already is."""
    if tuple(array.shape) != tuple(shape) or array.dtype.itemsize != ST_ITEMSIZE[dtype]:
        raise RuntimeError(f"{name}: produced {array.dtype} {tuple(array.shape)}, planned {dtype} {tuple(shape)}")
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8))


def write_safetensors_streaming(path: Union[str, Path], specs: List[TensorSpec],
                                produce: Callable[[str], np.ndarray],
                                metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write a safetensors file from shapes known up front, asking ``produce(name)`` for one numpy array at a time
    (BF16 as uint16 bits), then fsync it. Only one produced array is alive at a time; nothing is copied beyond
    what C order and little-endian storage need. ``RuntimeError`` when a produced array does not fit its spec."""
    with open(path, "wb") as handle:
        handle.write(_tensor_header(specs, metadata))
        for name, dtype, shape in specs:
            handle.write(_little_endian_bytes(produce(name), name, dtype, shape))
        handle.flush()
        os.fsync(handle.fileno())


def _torch_dtype_names() -> Dict["torch.dtype", str]:
    import torch

    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
            torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def _tensor_as_numpy(tensor: "torch.Tensor") -> np.ndarray:
    """A CPU tensor's data as numpy (bfloat16 as its uint16 bits), shape kept."""
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def write_model_files(directory: Union[str, Path], config: ErnieViL2Config, specs: List[TensorSpec],
                      produce: Callable[[str], np.ndarray], vocab_file: Optional[Union[str, Path]] = None,
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """The one writer of a converted directory's files: ``config.json``, ``model.safetensors`` streamed from
    ``specs`` and ``produce`` (see :func:`write_safetensors_streaming`; numpy only, so the converter runs without
    torch) and a copy of ``vocab_file``. ``directory`` is an unpublished one (the hidden directory of
    :func:`~ernievil2torch.storage.atomic.atomic_directory`), where more files may join them."""
    directory = Path(directory)
    config.save(directory / CONFIG_NAME)
    write_safetensors_streaming(directory / WEIGHTS_NAME, specs, produce, metadata)
    if vocab_file is not None:
        shutil.copyfile(vocab_file, directory / VOCAB_NAME)


def publish_model_dir(dst: Union[str, Path], config: ErnieViL2Config, specs: List[TensorSpec],
                      produce: Callable[[str], np.ndarray], *, overwrite: bool = False,
                      vocab_file: Optional[Union[str, Path]] = None,
                      metadata: Optional[Mapping[str, str]] = None) -> Path:
    """:func:`write_model_files` published atomically at ``dst`` (its previous content or the complete new
    directory, never a mix); :class:`~ernievil2torch.errors.OutputExistsError` when ``dst`` exists and
    ``overwrite`` is false. Returns ``dst``."""
    with atomic_directory(dst, overwrite) as tmp:
        write_model_files(tmp, config, specs, produce, vocab_file, metadata)
    return Path(dst)


def tensor_specs(state: Mapping[str, "torch.Tensor"]) -> Tuple[List[TensorSpec], Callable[[str], np.ndarray]]:
    """A torch state dict as :func:`write_model_files` takes it: the specs and the per-name producer."""
    names = _torch_dtype_names()
    specs = [(name, names[t.dtype], tuple(t.shape)) for name, t in state.items()]
    return specs, lambda name: _tensor_as_numpy(state[name])


def fill_model_dir(directory: Union[str, Path], config: ErnieViL2Config, state: Mapping[str, "torch.Tensor"],
                   vocab_file: Optional[Union[str, Path]] = None,
                   metadata: Optional[Mapping[str, str]] = None) -> None:
    """:func:`write_model_files` for a torch state dict (training checkpoints, which add files of their own)."""
    specs, produce = tensor_specs(state)
    write_model_files(directory, config, specs, produce, vocab_file, metadata)


def write_model_dir(dst: Union[str, Path], config: ErnieViL2Config, state: Mapping[str, "torch.Tensor"],
                    overwrite: bool = False, vocab_file: Optional[Union[str, Path]] = None,
                    metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Save an in-memory torch state dict as a converted directory with :func:`publish_model_dir`; returns
    ``dst``."""
    specs, produce = tensor_specs(state)
    return publish_model_dir(dst, config, specs, produce, overwrite=overwrite, vocab_file=vocab_file,
                             metadata=metadata)


def read_model_dir(path: Union[str, Path], device: Union[str, "torch.device", None] = None
                   ) -> Tuple[ErnieViL2Config, Dict[str, "torch.Tensor"]]:
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
        check_config(config)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: invalid config ({str(exc)[:300]})") from None
    except OSError as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: cannot read ({exc.strerror or exc})") from None
    try:
        state = load_file(str(path / WEIGHTS_NAME), device=str(device or "cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path / WEIGHTS_NAME}: cannot read weights ({exc})") from None
    return config, state


def read_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The safetensors metadata a converted directory was written with (source file, layout, sha256, ...)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(Path(path) / WEIGHTS_NAME), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read {WEIGHTS_NAME} ({exc})") from None
