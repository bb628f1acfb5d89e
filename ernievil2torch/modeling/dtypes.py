"""Compute and storage dtypes by name: one resolver for every command that takes ``--dtype``."""
from __future__ import annotations

import torch

from ..constants import DTYPE_ALIASES
from ..errors import InputError


def torch_dtype(name: str) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ... -> ``torch.bfloat16``; :class:`InputError` naming the accepted spellings."""
    canonical = DTYPE_ALIASES.get(str(name))
    if canonical is None:
        raise InputError(f"dtype must be one of {sorted(DTYPE_ALIASES)}, got {name!r}")
    return getattr(torch, canonical)
