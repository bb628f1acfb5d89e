"""The folder ``ernievil2 embed`` writes, read back and checked in one place.

An *embed output* is a folder holding ``embeddings.npy`` (a 2-D float array [N, D], one row per item) and
``ids.txt`` (one id per line, line ``i`` naming row ``i``), optionally with ``manifest.json`` (counts, dim, dtype).
:func:`read_embed_output` is the one reader of that format: the service's gallery, ``dedup``, ``search`` and
``load_embeddings`` all call it, so every one of them refuses the same broken folders with the same messages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..errors import InputError
from .json_files import read_json_object

#: File names inside an embed output.
EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.txt"
MANIFEST_FILE = "manifest.json"
#: Rows checked for NaN/infinity per step (bounds the temporary when the array is memory-mapped).
FINITE_CHECK_ROWS = 65_536


@dataclass
class EmbedOutput:
    """An embed output read by :func:`read_embed_output`.

    ``embeddings`` is [N, D] floating point (a read-only memory map when read with ``mmap=True``); ``ids[i]`` names
    row ``i``; ``manifest`` is ``manifest.json`` parsed, or None when the folder has none.
    """

    folder: Path
    embeddings: np.ndarray
    ids: List[str]
    manifest: Optional[Dict[str, Any]] = None

    @property
    def count(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def summary(self) -> str:
        return f"{self.folder}: {self.count} embeddings of dimension {self.dim} ({self.embeddings.dtype})"


def is_embed_output(folder: Union[str, os.PathLike]) -> bool:
    """Whether ``folder`` looks like an embed output (both files present); :func:`read_embed_output` checks more."""
    path = Path(folder)
    return (path / EMBEDDINGS_FILE).is_file() and (path / IDS_FILE).is_file()


def read_embed_output(folder: Union[str, os.PathLike], mmap: bool = False,
                      check_finite: bool = True) -> EmbedOutput:
    """Read and validate an embed output folder.

    ``mmap=True`` memory-maps ``embeddings.npy`` (nothing is read into memory but the ids). ``check_finite``
    scans every row for NaN or infinity (chunk by chunk, so a memory map stays cheap). Raises
    :class:`~ernievil2torch.errors.InputError`, one specific message each, when the folder is missing or not a
    folder, a file is missing or unreadable, the array is not 2-D floating point or has no columns, the numbers of
    rows and ids differ, or a value is not finite.
    """
    path = Path(folder)
    if not path.exists():
        raise InputError(f"{path} is not an `ernievil2 embed` output: it does not exist")
    if not path.is_dir():
        raise InputError(f"{path} is not an `ernievil2 embed` output: it is a file, not a folder")
    for name in (EMBEDDINGS_FILE, IDS_FILE):
        if not (path / name).is_file():
            raise InputError(f"{path} is not an `ernievil2 embed` output: {name} is missing")
    try:
        embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path / EMBEDDINGS_FILE} is not a readable .npy array: {exc}") from None
    if embeddings.ndim != 2 or embeddings.shape[1] == 0:
        raise InputError(f"{path / EMBEDDINGS_FILE} must be a 2-D [N, D] array with D > 0, got shape "
                         f"{embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise InputError(f"{path / EMBEDDINGS_FILE} must hold floating point numbers, got {embeddings.dtype}")
    try:
        ids = (path / IDS_FILE).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path / IDS_FILE} is not UTF-8 text: {exc}") from None
    if len(ids) != embeddings.shape[0]:
        raise InputError(f"{path}: {embeddings.shape[0]} embeddings but {len(ids)} ids in {IDS_FILE}")
    if check_finite:
        _check_finite(embeddings, path / EMBEDDINGS_FILE)
    return EmbedOutput(path, embeddings, ids, read_json_object(path / MANIFEST_FILE))


def first_non_finite_row(array: np.ndarray, chunk_rows: int = FINITE_CHECK_ROWS) -> Optional[int]:
    """The first row of a 2-D array that holds NaN or infinity, or None; read ``chunk_rows`` rows at a time, so a
    memory map is never loaded whole."""
    for start in range(0, array.shape[0], chunk_rows):
        finite = np.isfinite(np.asarray(array[start:start + chunk_rows])).all(axis=1)
        if not finite.all():
            return start + int(np.flatnonzero(~finite)[0])
    return None


def _check_finite(embeddings: np.ndarray, where: Path) -> None:
    bad = first_non_finite_row(embeddings)
    if bad is not None:
        raise InputError(f"{where} holds NaN or infinity (first in row {bad})")
