"""The converted-directory format: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``), written atomically.

A directory is published with :func:`~ernievil2torch.storage.atomic.atomic_directory` (the previous output or the
complete new one, never a mix). Tensors are streamed into the safetensors file one at a time, so converting keeps
peak memory near one copy of the checkpoint. Reading uses safetensors only: no pickle is ever involved.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch

from ..config import ErnieViL2Config
from ..constants import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME
from ..errors import CheckpointError
from .atomic import atomic_directory

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


def fill_model_dir(directory: Union[str, Path], config: ErnieViL2Config, state: Mapping[str, torch.Tensor],
                   vocab_file: Optional[Union[str, Path]] = None,
                   metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write the files of a converted directory into ``directory`` (an unpublished one, e.g. the hidden directory
    of :func:`~ernievil2torch.storage.atomic.atomic_directory`, where more files may join them)."""
    directory = Path(directory)
    specs = [(name, t.dtype, tuple(t.shape)) for name, t in state.items()]
    config.save(directory / CONFIG_NAME)
    write_safetensors_streaming(directory / WEIGHTS_NAME, specs, lambda name: state[name].detach().cpu(), metadata)
    if vocab_file is not None:
        shutil.copyfile(vocab_file, directory / VOCAB_NAME)


def write_model_dir(dst: Union[str, Path], config: ErnieViL2Config, state: Mapping[str, torch.Tensor],
                    overwrite: bool = False, vocab_file: Optional[Union[str, Path]] = None,
                    metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Save an in-memory state dict as a converted directory (atomically); returns ``dst``."""
    with atomic_directory(dst, overwrite) as tmp:
        fill_model_dir(tmp, config, state, vocab_file, metadata)
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
            elif item.name.endswith("dropout"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise ValueError(f"{item.name} = {value!r} is not a probability in [0, 1)")
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


def read_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The safetensors metadata a converted directory was written with (source file, layout, sha256, ...)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(Path(path) / WEIGHTS_NAME), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read {WEIGHTS_NAME} ({exc})") from None
