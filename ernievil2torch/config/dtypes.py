"""dtype names: the one resolver of every accepted spelling (torch- and numpy-free)."""
from __future__ import annotations

from typing import Any

from ..constants import DTYPE_ALIASES, KEEP_DTYPE
from ..errors import InputError


def canonical_dtype(name: Any, allow_keep: bool = False) -> str:
    """The canonical dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``; ``"keep"`` where ``allow_keep``)
    of any spelling in :data:`~ernievil2torch.constants.DTYPE_ALIASES`, case-insensitive.

    The one resolver of dtype names for every command, the converter and ``from_pretrained``: it imports neither
    torch nor numpy, so a command can refuse a bad spelling before any work. Raises :class:`InputError` naming the
    accepted spellings.
    """
    text = str(name).strip().lower()
    if allow_keep and text == KEEP_DTYPE:
        return KEEP_DTYPE
    canonical = DTYPE_ALIASES.get(text)
    if canonical is None:
        accepted = sorted(DTYPE_ALIASES) + ([KEEP_DTYPE] if allow_keep else [])
        raise InputError(f"dtype must be one of {', '.join(accepted)}, not {name!r}")
    return canonical
