"""Where an index lives in Milvus: one collection of photo rows per model, the alias searches go through, and the
list of files that could not be read.

* ``photos_<model hash>``: a row per file (id, normalised embedding, metadata). A model's rows never share a
  collection with another model's, so embeddings are never mixed.
* The alias ``photos`` names the collection searches use (the service searches the alias, so a re-index becomes
  visible at the moment the alias moves, complete). ``index`` with another model is refused unless ``--reindex``:
  then the new model's collection is filled (resumably: it is an ordinary incremental run into that collection)
  and the alias is moved only when it is complete; the old collection is then dropped.
* ``photos_<model hash>_failed``: the files that could not be read, with the reason, size and mtime (a 2-d
  placeholder vector: Milvus collections need one), retried only when the file changes.
* ``photos_<model hash>_folders``: the folders that hold photos (:class:`FolderList`), for the page's folder
  filter: listing them from the photo rows would read every row (Milvus Lite reads the whole collection for each
  page of a scan: minutes at a million rows).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set

import numpy as np

from ...errors import InputError
from ...retrieval.milvus import MilvusBackend, connect, is_embedded, open_here, release
from .crash import crash_point

#: The alias every search uses.
ALIAS = "photos"
#: The vector index of photo rows (chosen by benchmarks/milvus_ann.py: recall@10 >= 0.99 against exact search).
INDEX_TYPE = "HNSW"
HASH_DIGITS = 16
#: Metadata keys the service filters on, copied into indexed scalar fields (a filtered search then costs an index
#: lookup, not a parse of every row's JSON): the photo's folder (``Under``) and its capture time (``Range``).
FILTER_FIELDS = {"folder": "VARCHAR", "taken_ts": "INT64"}


class ModelMismatchError(InputError):
    """The index was built with another model (its embeddings cannot be compared with this model's)."""


def collection_for(model_hash: str) -> str:
    """The collection that holds ``model_hash``'s rows."""
    return f"{ALIAS}_{model_hash[:HASH_DIGITS]}"


@dataclass
class Catalog:
    """The database of one index: its client and the collection searches use now (None: no index yet)."""

    uri: str
    client: Any
    active: Optional[str]
    owns_server: bool = False

    @classmethod
    def open(cls, uri: str, token: Optional[str] = None) -> "Catalog":
        """Connect; an embedded database this process did not have open is closed again by :meth:`close`."""
        opened_before = is_embedded(uri) and open_here(uri)
        client = connect(uri, token)
        return cls(uri, client, active_collection(client), owns_server=is_embedded(uri) and not opened_before)

    def close(self) -> None:
        """Close the client, and the embedded database when this catalog opened it (the folder is free again)."""
        self.client.close()
        if self.owns_server:
            release(self.uri)

    def check_model(self, model_hash: str, reindex: bool) -> str:
        """The collection this run writes: this model's. :class:`ModelMismatchError` when the index belongs to
        another model and ``reindex`` is off."""
        target = collection_for(model_hash)
        if self.active is not None and self.active != target and not reindex:
            raise ModelMismatchError(
                f"{self.uri} was indexed with another model (collection {self.active}; this model's would be "
                f"{target}): its embeddings cannot be compared with this model's. Run with --reindex to rebuild it "
                "with this model (the old index keeps answering searches until the new one is complete)")
        return target

    def rows(self, collection: str, dim: int) -> MilvusBackend:
        return MilvusBackend(dim, self.uri, collection=collection, index_type=INDEX_TYPE, client=self.client,
                             scalar_fields=FILTER_FIELDS)

    def failures(self, collection: str) -> MilvusBackend:
        return MilvusBackend(2, self.uri, collection=f"{collection}_failed", client=self.client)

    def folder_list(self, collection: str) -> "FolderList":
        return FolderList(MilvusBackend(2, self.uri, collection=folders_collection(collection), client=self.client))

    def publish(self, collection: str) -> Optional[str]:
        """Point the alias at ``collection`` (complete now); returns the collection it pointed at before."""
        previous = self.active
        if previous is None:
            self.client.create_alias(collection, ALIAS)
        elif previous != collection:
            self.client.alter_alias(collection, ALIAS)
        self.active = collection
        return previous if previous != collection else None

    def switch_to(self, collection: str) -> Optional[str]:
        """Make ``collection`` (complete now) the one searches use, then drop the collection the alias left (a
        re-index); returns the dropped one's name, or None. Killed between the two (crash point
        ``reindex-before-drop``), searches already use the new collection and the old one is left on disk, used by
        nothing."""
        previous = self.publish(collection)
        if previous is not None:
            crash_point("reindex-before-drop")
            self.drop(previous)
        return previous

    def drop(self, collection: str) -> None:
        """Drop a collection, its list of failures and its folder list (after the alias left it)."""
        for name in (collection, f"{collection}_failed", folders_collection(collection)):
            if self.client.has_collection(name):
                self.client.drop_collection(name)


def folders_collection(collection: str) -> str:
    """The collection of ``collection``'s folder list."""
    return f"{collection}_folders"


class FolderList:
    """The folders that hold a collection's photos (each photo's own folder, relative to its root; the root '' is
    not listed): one row per folder, its id the SHA-1 of the folder (a folder may be longer than an id may be), the
    folder in its metadata, a 2-d placeholder vector.

    Writers keep it: each batch of rows :meth:`add` s its folders (so a folder indexed while the service runs is
    listed at once), and a folder run, which knows every photo of the library, :meth:`replace` s the list at its end
    (folders emptied by moves and deletions leave then). Killed in between, the list can hold an emptied folder
    until the next complete run (a filter on it finds nothing); it never misses a folder that holds a row."""

    def __init__(self, backend: MilvusBackend) -> None:
        self.backend = backend
        self._known: Optional[Set[str]] = None

    def read(self) -> List[str]:
        """The folders listed, sorted."""
        return sorted({meta["folder"] for _, meta in self.backend.rows() if isinstance(meta.get("folder"), str)})

    def add(self, folders: Iterable[str]) -> None:
        """List these folders too (those listed already cost nothing: the list is read once per writer)."""
        if self._known is None:
            self._known = set(self.read())
        new = sorted({folder for folder in folders if folder} - self._known)
        if new:
            self.backend.upsert(placeholder_vectors(len(new)), [_folder_id(f) for f in new],
                                [{"folder": folder} for folder in new])
            self._known.update(new)

    def replace(self, folders: Iterable[str]) -> None:
        """Make the list exactly ``folders``: the new ones added first, then the others removed."""
        wanted = {folder for folder in folders if folder}
        self.add(wanted)
        stale = [row_id for row_id, meta in self.backend.rows() if meta.get("folder") not in wanted]
        self.backend.remove(stale)
        self._known = set(wanted)


def placeholder_vectors(count: int) -> np.ndarray:
    """``count`` copies of the 2-d vector the side collections (failures, folders) store: Milvus needs one per row."""
    return np.tile(np.float32([1.0, 0.0]), (count, 1))


def _folder_id(folder: str) -> str:
    return hashlib.sha1(folder.encode("utf-8", "surrogatepass")).hexdigest()


def active_collection(client: Any) -> Optional[str]:
    """The collection the alias names, or None when there is no index yet."""
    aliases = client.list_aliases().get("aliases", [])
    if ALIAS not in aliases:
        return None
    return str(client.describe_alias(ALIAS)["collection_name"])


def index_info(client: Any) -> Dict[str, Any]:
    """The active collection and its row count (for ``/healthz`` and summaries)."""
    active = active_collection(client)
    if active is None:
        return {"collection": None, "rows": 0}
    count = client.query(active, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return {"collection": active, "rows": int(count[0]["count(*)"])}
