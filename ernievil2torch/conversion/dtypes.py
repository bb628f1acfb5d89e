"""Storage dtypes of a conversion, in numpy alone (the converter never imports torch).

A Paddle file holds float16/32/64 arrays, or bfloat16 as the raw ``uint16`` bits. The converter writes float32,
float16 or bfloat16 (bits again), or keeps the source's own dtype. The casts give the same bits as
``torch.Tensor.to``: round to nearest even, and float64 or bfloat16 sources pass through float32 first (torch's
``Half``/``BFloat16`` are built from a float). NaN stays NaN (its payload is
not kept: torch's own kernels disagree on it).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

#: Canonical dtype name (:func:`~ernievil2torch.config.canonical_dtype`) -> the safetensors dtype the converter
#: writes for it (``keep`` writes the source's own, :func:`storage_name`).
OUTPUT_DTYPES: Dict[str, str] = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_SOURCE_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                 np.dtype(np.uint16): "BF16"}
_BF16_QUIET_NAN = np.uint16(0x7FC0)


def storage_name(array: np.ndarray) -> str:
    """The safetensors dtype of a source array as it is stored (``uint16`` is Paddle's bfloat16)."""
    return _SOURCE_NAMES[np.dtype(array.dtype).newbyteorder("=")]


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (``uint16``) -> float32, exactly (bfloat16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even; overflow rounds to infinity; NaN becomes a quiet NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = ((bits + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = _BF16_QUIET_NAN
    return out


def cast(array: np.ndarray, target: str) -> np.ndarray:
    """``array`` (a source array, bfloat16 as ``uint16`` bits) stored as ``target`` (``"F32"``, ``"F16"``,
    ``"BF16"`` or the array's own :func:`storage_name`); BF16 comes back as ``uint16`` bits. No copy when the
    dtype already matches."""
    source = storage_name(array)
    if source == target:
        return array
    if target == "BF16":
        return float32_to_bf16_bits(array.astype(np.float32, copy=False))
    values = bf16_bits_to_float32(array) if source == "BF16" else array
    if target == "F32":
        return values.astype(np.float32, copy=False)
    if target == "F16":
        with np.errstate(over="ignore"):  # beyond float16's range is infinity, as in torch
            return values.astype(np.float32, copy=False).astype(np.float16)
    raise ValueError(f"cannot store {source} data as {target}")
