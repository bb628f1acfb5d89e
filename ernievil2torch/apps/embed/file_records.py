"""The facts of each embedded image file that ``embed`` records beside its vectors (``files.jsonl``), so that
``index --from_embeddings`` can load an embed output as the rows a folder run of ``index`` would write.

Every image item that is a local file gets a *place*: its root and its path relative to it, as ``index`` names files
(the root absolute and resolved, the path ``/``-separated). A folder input is the root of everything listed under
it; a file named by a glob, a list file or on its own has its own folder as root. Webdataset samples are no files:
they get no place and no record. The records themselves (:func:`~ernievil2torch.apps.index.files.file_record`:
size, mtime, content SHA-256, width/height, EXIF capture time) are computed on threads while the model runs.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ...data.inputs import Item, list_images
from ..index.files import file_record

#: (root, path) of an item's file, or None for an item that is no local file.
Place = Optional[Tuple[str, str]]


def list_image_files(inputs: Union[str, Sequence[str]]) -> Tuple[List[Item], List[Place]]:
    """:func:`~ernievil2torch.data.inputs.list_images` of ``inputs`` (the same items, in the same order), with the
    place of each item's file."""
    sources = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items: List[Item] = []
    places: List[Place] = []
    for source in sources:
        listed = list_images(str(source))
        items += listed
        if Path(source).is_dir():
            root = str(Path(source).resolve())
            places += [(root, item.id) for item in listed]
        else:
            places += [_own_folder(item) for item in listed]
    return items, places


def _own_folder(item: Item) -> Place:
    if not isinstance(item.source, (str, os.PathLike)):
        return None
    full = Path(os.path.abspath(item.source))
    return str(full.parent.resolve()), full.name


class RecordMaker:
    """Computes the records of items on ``workers`` threads (hashing releases the GIL: it overlaps the model)."""

    def __init__(self, places: Sequence[Place], workers: int) -> None:
        self.places = places
        self.pool = ThreadPoolExecutor(max(1, workers))
        self.pending: Dict[int, Future] = {}

    def submit(self, indices: Sequence[int]) -> None:
        for index in indices:
            if self.places[index] is not None:
                self.pending[index] = self.pool.submit(_record, *self.places[index])

    def take(self, indices: Sequence[int]) -> List[Optional[dict]]:
        """The records of ``indices`` (submitted before), in that order; None for an item without a file or whose
        file could not be read again (``index --from_embeddings`` lists it as not loaded)."""
        return [self.pending.pop(index).result() if index in self.pending else None for index in indices]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _record(root: str, path: str) -> Optional[dict]:
    try:
        return file_record(root, path)
    except Exception:  # gone or unreadable since it was embedded: the row cannot say what file it is
        return None
