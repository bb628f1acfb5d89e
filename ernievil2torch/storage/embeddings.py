"""The folder ``ernievil2 embed`` writes: written, read back and checked in one place.

An *embed output* is a folder holding ``embeddings.npy`` (a 2-D float array [N, D], one row per item) and
``ids.txt`` (one id per line, line ``i`` naming row ``i``), optionally with ``manifest.json`` (kind, counts, dim,
dtype, the model's name and hash, ...), ``failed.tsv`` (id <TAB> reason per skipped item) and ``files.jsonl`` (line
``i``: the facts of row ``i``'s image file, or ``null``: what ``index --from_embeddings`` loads, read by
:func:`read_file_records`; outputs made before it have none and read as before). :func:`write_embed_output` is the
one writer of those files and :func:`read_embed_output` the one reader: the service's gallery, ``dedup`` and
``search`` all call it, so every one of them refuses the same broken folders with the same messages.
:func:`read_embeddings_npy` gives a bare ``.npy`` array the same array checks.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..constants import EMBED_KINDS
from ..errors import InputError
from .atomic import atomic_write_bytes
from .json_files import read_json_object

#: File names inside an embed output.
EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.txt"
MANIFEST_FILE = "manifest.json"
FAILURES_FILE = "failed.tsv"
FILES_FILE = "files.jsonl"
#: The first bytes of every ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"
#: What an embed output can hold (its manifest's ``kind``).
KINDS = EMBED_KINDS
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


def read_embed_output(folder: Union[str, os.PathLike], mmap: bool = False, check_finite: bool = True,
                      kind: Optional[str] = None) -> EmbedOutput:
    """Read and validate an embed output folder.

    ``mmap=True`` memory-maps ``embeddings.npy`` (nothing is read into memory but the ids). ``check_finite``
    scans every row for NaN or infinity (chunk by chunk, so a memory map stays cheap). ``kind`` ('image' or
    'text'), when given, is the kind the caller needs: an output whose manifest names another kind is refused; one
    without a manifest, or whose manifest names no kind (made by hand or by another tool), is accepted, since
    nothing in it says what it holds. Raises :class:`~ernievil2torch.errors.InputError`, one specific message
    each, when the folder is missing or not a folder, a file is missing or unreadable, the array is not 2-D
    floating point or has no columns, the numbers of rows and ids differ, a value is not finite, or the manifest's
    kind is not ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(folder)
    if not path.exists():
        raise InputError(f"{path} is not an `ernievil2 embed` output: it does not exist")
    if not path.is_dir():
        raise InputError(f"{path} is not an `ernievil2 embed` output: it is a file, not a folder")
    for name in (EMBEDDINGS_FILE, IDS_FILE):
        if not (path / name).is_file():
            raise InputError(f"{path} is not an `ernievil2 embed` output: {name} is missing")
    manifest = read_json_object(path / MANIFEST_FILE)
    found = None if manifest is None else manifest.get("kind")
    if kind is not None and found is not None and found != kind:
        raise InputError(f"{path} holds {found} embeddings ({MANIFEST_FILE} kind {found!r}); {kind} embeddings "
                         f"are needed here (`ernievil2 embed --kind {kind}`)")
    embeddings = _load_npy(path / EMBEDDINGS_FILE, mmap)
    try:
        ids = (path / IDS_FILE).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path / IDS_FILE} is not UTF-8 text: {exc}") from None
    if len(ids) != embeddings.shape[0]:
        raise InputError(f"{path}: {embeddings.shape[0]} embeddings but {len(ids)} ids in {IDS_FILE}")
    if check_finite:
        _check_finite(embeddings, path / EMBEDDINGS_FILE)
    return EmbedOutput(path, embeddings, ids, manifest)


def read_file_records(output: EmbedOutput) -> Optional[List[Optional[Dict[str, Any]]]]:
    """The per-row file facts of an embed output (``files.jsonl``: one JSON object or ``null`` per row, in row
    order), or None when its manifest names no such file (an output made before embed recorded them, a text or a
    webdataset output). :class:`~ernievil2torch.errors.InputError` when the manifest names the file but it is
    missing, a line is not a JSON object or ``null``, or the number of lines is not the number of rows (a join
    that did not finish)."""
    if output.manifest is None or not output.manifest.get("files"):
        return None
    path = output.folder / FILES_FILE
    if not path.is_file():
        raise InputError(f"{output.folder}: {MANIFEST_FILE} names {FILES_FILE} but it is missing")
    records: List[Optional[Dict[str, Any]]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(f"{path} line {number} is not JSON") from None
            if record is not None and not isinstance(record, dict):
                raise InputError(f"{path} line {number} is not a JSON object or null")
            records.append(record)
    if len(records) != output.count:
        raise InputError(f"{output.folder}: {output.count} embeddings but {len(records)} lines in {FILES_FILE} "
                         "(a join that did not finish: re-run the same embed command)")
    return records


def read_embeddings_npy(file: Union[str, os.PathLike], mmap: bool = False, check_finite: bool = True) -> np.ndarray:
    """A bare ``.npy`` file of embeddings [N, D], with the array checks of :func:`read_embed_output`: an
    :class:`~ernievil2torch.errors.InputError` when it does not exist, is not a readable ``.npy`` array, is not 2-D
    floating point with D > 0, or (with ``check_finite``) holds NaN or infinity."""
    path = Path(file)
    if not path.exists():
        raise InputError(f"{path} does not exist (an `ernievil2 embed` output folder or a .npy file is needed)")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a .npy file")
    embeddings = _load_npy(path, mmap)
    if check_finite:
        _check_finite(embeddings, path)
    return embeddings


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """``path`` loaded (memory-mapped with ``mmap``) and checked to be 2-D floating point with columns."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"{path} is not a readable .npy array: {exc}") from None
    if magic != NPY_MAGIC:
        raise InputError(f"{path} is not a readable .npy array: it does not start like a .npy file")
    try:
        embeddings = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        reason = "it holds Python objects" if "pickle" in str(exc) or "Python objects" in str(exc) else str(exc)
        raise InputError(f"{path} is not a readable .npy array: {reason}") from None
    if not isinstance(embeddings, np.ndarray):
        raise InputError(f"{path} is not a readable .npy array: it is a {type(embeddings).__name__}")
    if embeddings.ndim != 2 or embeddings.shape[1] == 0:
        raise InputError(f"{path} must be a 2-D [N, D] array with D > 0, got shape {embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise InputError(f"{path} must hold floating point numbers, got {embeddings.dtype}")
    return embeddings


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


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_embed_output(out_dir: Union[str, os.PathLike], parts: Iterable[np.ndarray], ids: Sequence[str],
                       failures: Sequence[Tuple[str, str]], kind: str, dim: int, dtype,
                       records: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
                       **manifest_fields: Any) -> Dict[str, Any]:
    """Write the final files of an embed output into ``out_dir`` and return the manifest written.

    ``parts`` are [n_i, dim] blocks, in row order, whose rows add up to ``len(ids)``; they are streamed into
    ``embeddings.npy`` through a memory map (nothing is held whole) and stored as ``dtype``. ``ids[i]`` names row
    ``i`` (``ids.txt``); ``failures`` are ``(id, reason)`` of the skipped items (``failed.tsv``). Tabs and line
    breaks in ids and reasons become spaces, so every line is one record. ``records``, when given, are the file
    facts of each row (``files.jsonl``, one JSON value a line, named in the manifest as ``files``). ``manifest.json``
    holds ``kind``, ``count``, ``failed``, ``dim``, ``dtype``, the file names, ``manifest_fields`` (e.g. ``normalized``,
    ``model_dir``, ``shards``) and ``created``; it is written last. Each file is replaced atomically.
    """
    out = Path(out_dir)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    total = len(ids)
    if records is not None and len(records) != total:
        raise ValueError(f"{len(records)} file records but {total} ids")
    tmp = out / f".{EMBEDDINGS_FILE}.tmp-{os.getpid()}.npy"
    joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(total, dim))
    row = 0
    for part in parts:
        if row + part.shape[0] > total:
            raise ValueError(f"the parts hold more rows than the {total} ids")
        joined[row:row + part.shape[0]] = part
        row += part.shape[0]
    joined.flush()
    del joined
    if row != total:
        tmp.unlink()
        raise ValueError(f"the parts hold {row} rows but there are {total} ids")
    os.replace(tmp, out / EMBEDDINGS_FILE)
    atomic_write_bytes(out / IDS_FILE, "".join(_one_line(i) + "\n" for i in ids).encode("utf-8"))
    atomic_write_bytes(out / FAILURES_FILE, "".join(f"{_one_line(i)}\t{_one_line(r)}\n"
                                                    for i, r in failures).encode("utf-8"))
    if records is not None:
        tmp_files = out / f".{FILES_FILE}.tmp-{os.getpid()}"
        with open(tmp_files, "w", encoding="utf-8") as handle:  # streamed: millions of rows are never one string
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_files, out / FILES_FILE)
    manifest = {"kind": kind, "count": total, "failed": len(failures), "dim": dim, "dtype": np.dtype(dtype).name,
                **{k: v for k, v in manifest_fields.items() if k != "shards"},
                "embeddings": EMBEDDINGS_FILE, "ids": IDS_FILE, "failures": FAILURES_FILE,
                **({"files": FILES_FILE} if records is not None else {}),
                **({"shards": manifest_fields["shards"]} if "shards" in manifest_fields else {}),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest
