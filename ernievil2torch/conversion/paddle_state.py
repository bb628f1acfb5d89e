"""Paddle's state-dict conventions: the name-map entry ``paddle.save`` adds, tensors split into ``name@@.k``
slices, ``(name, array)`` pairs and a wrapping dict, turned into a plain ``{name: ndarray}``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from ..errors import CheckpointError, UnsafePickleError
from .pickle_shims import ArraySpec, DTypeSpec, check_dtype, check_shape, short_repr

#: The entry ``paddle.save`` adds: structured name -> parameter name (dropped on load, written by the writer).
STRUCTURE_KEY = "StructuredToParameterName@@"
#: How Paddle records tensors it split into slices (old pickle protocols cannot hold objects over 4 GB).
BIG_PARAM_KEY = "UnpackBigParamInfor@@"


def unpack_big_params(state: dict) -> None:
    """Re-join tensors Paddle split into ``name@@.0..n`` slices (old protocols cannot pickle >4 GB objects)."""
    info = state.pop(BIG_PARAM_KEY, None)
    if info is None:
        return
    if not isinstance(info, dict):
        raise CheckpointError(f"'{BIG_PARAM_KEY}' is not a dict")
    for name, meta in info.items():
        try:
            slices, shape = list(meta["slices"]), tuple(meta["OriginShape"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(f"malformed split-tensor record for {short_repr(name)}") from None
        if not isinstance(name, str) or not slices or not all(isinstance(s, str) for s in slices):
            raise CheckpointError(f"malformed split-tensor record for {short_repr(name)}")
        if len(set(slices)) != len(slices):
            raise CheckpointError(f"split tensor {short_repr(name)} lists a slice twice")
        if name in state:
            raise CheckpointError(f"split tensor {short_repr(name)} is also stored whole")
        try:
            shape = check_shape(tuple(shape))
        except UnsafePickleError:
            raise CheckpointError(f"split tensor {short_repr(name)} has a bad shape {short_repr(shape)}") from None
        missing = [s for s in slices if s not in state]
        if missing:
            raise CheckpointError(f"split tensor {short_repr(name)} lacks slices {short_repr(missing)}")
        parts = [np.ravel(as_array(s, state.pop(s))) for s in slices]
        total = sum(p.size for p in parts)
        if total != math.prod(shape):
            raise CheckpointError(f"split tensor {short_repr(name)}: {total} values do not fill shape {short_repr(shape)}")
        if len({p.dtype for p in parts}) != 1:
            raise CheckpointError(f"split tensor {short_repr(name)}: slices of different dtypes")
        state[name] = np.concatenate(parts).reshape(shape)


def _kind(value: Any) -> str:
    return {ArraySpec: "single array", DTypeSpec: "dtype"}.get(type(value), type(value).__name__)


def as_array(name: str, value: Any) -> np.ndarray:
    # Paddle sometimes stores (variable_name, ndarray) pairs instead of bare arrays.
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        value = value[1]
    if isinstance(value, ArraySpec):
        if value.array is None:
            raise CheckpointError(f"entry {short_repr(name)} is an array without data")
        value = value.array
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"entry {short_repr(name)} is a {_kind(value)}, not an array")
    check_dtype(value.dtype)
    return value


def normalise_state(obj: Any, available_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"the pickle holds a {_kind(obj)}, not a state dict")
    # A dict wrapping the state dict (e.g. {"model": {...}}): descend when it is the only entry.
    if len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, dict):
            obj = only
    state = dict(obj)
    state.pop(STRUCTURE_KEY, None)
    big = state.pop(BIG_PARAM_KEY, None)
    arrays: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"state dict key {short_repr(name)} is not a string")
        arrays[name] = as_array(name, value)
    # Every byte of every array comes from the file, unless the pickle reuses one array (memo) under many names:
    # a legitimate checkpoint never does, and a hostile one could multiply a small file into huge work or memory.
    declared = sum(a.nbytes for a in arrays.values())
    if available_bytes is not None and declared > available_bytes:
        raise CheckpointError(f"the arrays hold {declared} bytes but the file has only {available_bytes}: the "
                              "pickle reuses the same data under several names (hostile or corrupt)")
    if big is not None:
        arrays[BIG_PARAM_KEY] = big
        unpack_big_params(arrays)  # type: ignore[arg-type]
    if not arrays:
        raise CheckpointError("the state dict is empty")
    return arrays
