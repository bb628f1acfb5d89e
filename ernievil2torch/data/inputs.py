"""Inputs as items to encode: :class:`Item`, and the listings of what ``embed`` encodes (image collections: a folder,
a glob, a list file; text files: .txt, .jsonl, .csv/.tsv).

Every listed item keeps its input position and an id (``embed`` writes the ids to ``ids.txt``); an item that is known
to be bad up front (an empty text, a JSON line without the field) carries its error instead of failing the run.
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from ..errors import InputError
from .records import iter_jsonl

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
#: Listed in image folders besides :data:`IMAGE_EXTENSIONS`: the HEIC/HEIF photos phones write (decoded when
#: pillow-heif is installed, else listed as failed). Not served or read from webdataset shards.
PHONE_PHOTO_EXTENSIONS = {".heic", ".heif"}
TEXT_LIST_EXTENSIONS = {".txt", ".lst", ".list"}


@dataclass
class Item:
    """One input to encode: its id, the source (an image path or encoded bytes, or a callable that returns one
    when the image is decoded, such as a tar member; or a text) and, for an input known to be bad before it is
    decoded, the reason (``source`` is then unused)."""

    id: str
    source: Any
    error: Optional[str] = None


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def list_images(inputs: Union[str, Sequence[str]]) -> List[Item]:
    """Image inputs in a stable order: a folder (recursive, sorted relative paths; ids are those paths), a glob
    pattern (sorted matches), a list file (.txt/.lst: one path per line, relative to the list's folder; ids as
    written), a single image file, or a list of any of these."""
    if isinstance(inputs, (list, tuple)):
        return [item for part in inputs for item in list_images(str(part))]
    spec = str(inputs)
    path = Path(spec)
    if path.is_dir():
        wanted = IMAGE_EXTENSIONS | PHONE_PHOTO_EXTENSIONS
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted),
                       key=lambda p: p.relative_to(path).as_posix())
        return [Item(p.relative_to(path).as_posix(), str(p)) for p in files]
    if path.is_file() and path.suffix.lower() in TEXT_LIST_EXTENSIONS:
        items = []
        for line in path.read_text(encoding="utf-8").splitlines():
            name = line.strip()
            if name:
                full = Path(name) if Path(name).is_absolute() else path.parent / name
                items.append(Item(name, str(full)))
        return items
    if path.is_file():
        return [Item(spec, spec)]
    if _has_glob(spec):
        return [Item(m, m) for m in sorted(glob.glob(spec, recursive=True)) if os.path.isfile(m)]
    raise InputError(f"image input '{spec}' is not a folder, a glob pattern, a list file or an image file")


def list_texts(inputs: Union[str, Sequence[str]], field: str = "text", id_field: Optional[str] = None) -> List[Item]:
    """Texts in file order: .txt (one text per line), .jsonl (``field`` of each object) or .csv/.tsv (column
    ``field``, header row required). Ids are ``id_field`` values when given, else the 0-based row index (over
    all files). Empty texts, bad JSON lines and rows without the field become failed items (ids keep their row)."""
    files = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    raw: List[Tuple[Optional[str], Any, Optional[str]]] = []  # (id or None, text, error)
    for spec in files:
        path = Path(str(spec))
        if not path.is_file():
            raise InputError(f"text input '{path}' is not a file")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            for num, obj, error in iter_jsonl(path):
                if error is not None:
                    raw.append((None, None, f"{path.name} line {num}: {error}"))
                    continue
                if not isinstance(obj, dict) or field not in obj:
                    raw.append((None, None, f"{path.name} line {num}: no field '{field}'"))
                    continue
                key = obj.get(id_field) if id_field else None
                raw.append((None if key is None else str(key), obj[field], None))
        elif suffix in (".csv", ".tsv"):
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                if reader.fieldnames is None or field not in reader.fieldnames:
                    raise InputError(f"{path}: no column '{field}' (columns: {reader.fieldnames})")
                if id_field and id_field not in reader.fieldnames:
                    raise InputError(f"{path}: no column '{id_field}' (columns: {reader.fieldnames})")
                for row in reader:
                    raw.append((row[id_field] if id_field else None, row[field], None))
        else:  # plain text, one per line
            with open(path, encoding="utf-8", newline="") as handle:
                for line in handle:
                    raw.append((None, line.rstrip("\r\n"), None))
    items = []
    for index, (key, text, error) in enumerate(raw):
        if error is None and not isinstance(text, str):
            error = f"not a string ({type(text).__name__})"
        elif error is None and not text.strip():
            error = "empty text"
        items.append(Item(str(index) if key is None else key, text, error))
    return items
