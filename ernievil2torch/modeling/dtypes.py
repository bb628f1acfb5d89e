"""Compute and storage dtypes by name, as torch dtypes."""
from __future__ import annotations

from typing import Optional, Union

import torch

from ..config import canonical_dtype

DTypeLike = Union[str, torch.dtype, None]


def torch_dtype(name: str) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ... -> ``torch.bfloat16``, through
    :func:`~ernievil2torch.config.canonical_dtype` (:class:`InputError` naming the accepted spellings)."""
    return getattr(torch, canonical_dtype(name))


def optional_torch_dtype(dtype: DTypeLike) -> Optional[torch.dtype]:
    """None, a ``torch.dtype`` or a name (:func:`torch_dtype`) -> None or a ``torch.dtype``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return torch_dtype(dtype)
