"""The searchable photo library of ``serve --db`` / ``--uri``: the index ``ernievil2 index`` keeps in Milvus, searched
through its alias (so photos indexed while the service runs are found at once, and a ``--reindex`` takes over when
it is complete), with the two safe ways from a row id to a file: the photo itself and its cached thumbnail.

* Clients name photos by row id only (32 hex digits), never by path. A row's file is opened only when its
  recorded root is one of the roots the index holds, its path stays inside that root after resolving every
  symlink, it is a regular file with a photo extension, and it lies outside the database folder and the
  thumbnail cache: the database's own files are never served.
* Filters: ``folder`` (a folder relative to its root; its subfolders included) and a capture-date range (EXIF
  time, photos without one are left out when a range is given).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ...data.image_root import ImageLookupError
from ...errors import InputError
from ...retrieval.backends import Range, Under, UnknownIdError
from ...retrieval.milvus import MilvusBackend, connect, is_embedded
from ..index.catalog import (ALIAS, FILTER_FIELDS, INDEX_TYPE, FolderList, active_collection, collection_for,
                             folders_collection)
from ..index.files import PHOTO_EXTENSIONS, folder_and_above
from ..index.indexer import model_fingerprint
from .fair_slots import FairSlots
from .thumbnails import ThumbnailCache

logger = logging.getLogger(__name__)
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
#: Longest folder filter accepted (characters).
MAX_FOLDER_CHARS = 1024


@dataclass(frozen=True)
class LibraryHit:
    """One result: the row id, the cosine to the query, and the facts the page shows."""

    id: str
    score: float
    path: str
    folder: str
    taken: Optional[str]
    width: Optional[int]
    height: Optional[int]


@dataclass(frozen=True)
class LibraryFilter:
    """What a search keeps: photos under ``folder`` ('' or None: all) taken between two dates (inclusive)."""

    folder: Optional[str] = None
    taken_from: Optional[date] = None
    taken_to: Optional[date] = None

    def where(self) -> Dict[str, Any]:
        where: Dict[str, Any] = {}
        if self.folder:
            folder = self.folder.strip("/")
            if len(folder) > MAX_FOLDER_CHARS or "\x00" in folder or ".." in folder.split("/"):
                raise InputError("folder: a folder path inside the library, without '..'")
            where["folder"] = Under(folder)
        if self.taken_from is not None or self.taken_to is not None:
            if self.taken_from and self.taken_to and self.taken_from > self.taken_to:
                raise InputError("taken_from is after taken_to")
            low = _day_start(self.taken_from) if self.taken_from else None
            high = _day_start(self.taken_to) + 86_399 if self.taken_to else None
            where["taken_ts"] = Range(low, high)
        return where


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


class PhotoLibrary:
    """The index at ``uri`` (searched through its alias) for the model whose fingerprint is ``model_hash``."""

    def __init__(self, uri: str, model_hash: str, dim: int, thumbnails: ThumbnailCache,
                 token: Optional[str] = None, searches: int = 2) -> None:
        if isinstance(searches, bool) or not isinstance(searches, int) or searches < 1:
            raise InputError(f"db_searches must be a positive integer, got {searches!r}")
        client = connect(uri, token)
        active = active_collection(client)
        if active is None:
            raise InputError(f"{uri} holds no photo index yet: run `ernievil2 index MODEL FOLDER --db/--uri ...` first")
        if active != collection_for(model_hash):
            raise InputError(f"{uri} was indexed with another model (collection {active}); serve it with that model, "
                             "or re-index with this one (`ernievil2 index ... --reindex`)")
        self.uri = uri
        self.backend = MilvusBackend(dim, uri, collection=ALIAS, index_type=INDEX_TYPE, client=client,
                                     scalar_fields=FILTER_FIELDS)
        self.thumbnails = thumbnails
        self._private = [Path(uri).resolve()] if is_embedded(uri) else []
        self._private.append(thumbnails.folder.resolve())
        self._folder_list: Optional[FolderList] = None
        self._searching = FairSlots(searches)
        self._unlisted: set = set()  # collections without a folder list (warned about once)

    @classmethod
    def open(cls, uri: str, model_dir: Path, dim: int, thumbnail_dir: Path,
             token: Optional[str] = None, searches: int = 2) -> "PhotoLibrary":
        return cls(uri, model_fingerprint(Path(model_dir)), dim, ThumbnailCache(thumbnail_dir), token, searches)

    @property
    def searches(self) -> int:
        """Database searches at a time (``serve --db_searches``)."""
        return self._searching.count

    def __len__(self) -> int:
        return self.backend.count()

    @property
    def dim(self) -> int:
        return self.backend.dim

    def search(self, queries: np.ndarray, k: int, where: Optional[Dict[str, Any]] = None,
               offset: int = 0) -> List[List[LibraryHit]]:
        """The hits ``offset .. offset + k - 1`` of each query's ranking among the photos passing ``where``. At most
        ``searches`` (``serve --db_searches``) run at a time, the others wait their turn in arrival order
        (:class:`~.fair_slots.FairSlots`): Milvus Lite answers each filtered search from a fresh copy of every
        vector of the collection (about 3 GiB at a million rows), so the number at a time is what bounds the
        service's memory under load, and the order is what bounds its slowest answer."""
        with self._searching:
            found = self.backend.search(queries, k, where=where or None, offset=offset)
        return [[self._hit(hit.id, hit.score, hit.metadata) for hit in hits] for hits in found]

    def vector(self, photo_id: str) -> np.ndarray:
        """The stored embedding of a photo (more like this); 404 for an unknown id."""
        try:
            return self.backend.fetch(self._checked_id(photo_id)).vector
        except UnknownIdError:
            raise ImageLookupError(f"no photo {photo_id} in the library", 404) from None

    def photo_file(self, photo_id: str) -> Path:
        """The file of a photo, checked as the module docstring says (403/404 as :class:`ImageLookupError`)."""
        metadata = self._metadata(photo_id)
        root, relative = metadata.get("root"), metadata.get("path")
        if not isinstance(root, str) or not isinstance(relative, str) or "\x00" in relative or relative.startswith("/"):
            raise ImageLookupError(f"photo {photo_id}: its row names no file inside a library folder", 403)
        base = Path(root)
        try:
            real = (base / relative).resolve(strict=True)
            base = base.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ImageLookupError(f"photo {photo_id}: the file is gone (re-run `ernievil2 index`)", 404) from None
        if not real.is_relative_to(base) or any(real.is_relative_to(private) for private in self._private):
            raise ImageLookupError(f"photo {photo_id}: refused, the file is outside the library folders", 403)
        if not real.is_file() or real.suffix.lower() not in PHOTO_EXTENSIONS:
            raise ImageLookupError(f"photo {photo_id}: not a photo file", 404)
        return real

    def thumbnail(self, photo_id: str) -> Path:
        """The cached thumbnail of a photo (made on first request; EXIF-free)."""
        metadata = self._metadata(photo_id)
        return self.thumbnails.get(self.photo_file(photo_id), str(metadata.get("sha256", photo_id)))

    def folders(self, limit: int = 500) -> List[str]:
        """The library's folders (relative to their roots) and the folders above them, sorted, the first ``limit``
        (for the page's filter): read from the folder list the writers keep beside the active collection
        (:class:`~..index.catalog.FolderList`, a row per folder), not from the photo rows. An index written before
        folder lists existed has none: [] until ``index`` runs over it again (its folder filter still works)."""
        active = active_collection(self.backend.client)
        name = folders_collection(active) if active is not None else None
        if name is None or not self.backend.client.has_collection(name):
            if name not in self._unlisted:
                self._unlisted.add(name)
                logger.warning("%s has no folder list (written by an earlier version): re-run `ernievil2 index` "
                               "over it to list its folders on the page", self.uri)
            return []
        if self._folder_list is None or self._folder_list.backend.collection != name:
            self._folder_list = FolderList(MilvusBackend(2, self.uri, collection=name, client=self.backend.client))
        seen: set = set()
        for folder in self._folder_list.read():
            seen.update(folder_and_above(folder))
        return sorted(seen)[:limit]

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _checked_id(self, photo_id: str) -> str:
        if not ID_PATTERN.match(photo_id or ""):
            raise ImageLookupError(f"photo id {photo_id[:40]!r} is not 32 hex digits", 404)
        return photo_id

    def _metadata(self, photo_id: str) -> Dict[str, Any]:
        found = self.backend.get_many([self._checked_id(photo_id)], with_vectors=False)
        if not found:
            raise ImageLookupError(f"no photo {photo_id} in the library", 404)
        return dict(found[0].metadata)

    @staticmethod
    def _hit(photo_id: str, score: float, metadata: Dict[str, Any]) -> LibraryHit:
        return LibraryHit(photo_id, score, str(metadata.get("path", "")), str(metadata.get("folder", "")),
                          metadata.get("taken"), metadata.get("width"), metadata.get("height"))

