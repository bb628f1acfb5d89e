"""A :class:`~ernievil2torch.retrieval.backends.SearchBackend` on Milvus: embedded (Milvus Lite, a local ``.db``
data directory) or a Milvus server (``http://HOST:19530`` plus a token), through the same pymilvus client code.

* **Embedded** (``uri`` a path ending in ``.db``): pymilvus hands the path to ``milvus-lite``, which opens the data
  directory in this process and serves it on a gRPC port it picks at random on ``127.0.0.1`` only (checked by
  ``tests/retrieval/test_milvus.py``). Milvus Lite lets one process own a data directory (a ``flock`` on its
  ``LOCK`` file): a second process is refused with :class:`DatabaseBusyError` before anything else happens.
* **Server** (``uri`` ``http://`` / ``https://``): Milvus Standalone or Distributed, or ``milvus-lite server``.

One collection holds the rows: ``id`` (VARCHAR primary key, the caller's stable id), ``vector`` (FLOAT_VECTOR,
searched by inner product) and ``metadata`` (JSON). Filters become Milvus boolean expressions over JSON paths; keys
must be plain identifiers and values JSON scalars (nothing from a caller is pasted into an expression unchecked).
Reads use Strong consistency, so a search sees every write that returned before it.

``index_type`` picks the vector index: ``FLAT`` (exact), ``HNSW`` (``M``, ``efConstruction``; searched with ``ef``)
or ``IVF_FLAT`` (``nlist``; searched with ``nprobe``), the approximate ones chosen by measurement in
``benchmarks/milvus_ann.py``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .rows import (BackendHit, Contains, MetadataFilter, Range, StoredVector, Under, UnknownIdError, check_page,
                   checked_rows, checked_vectors)

#: Longest stable id (bytes of UTF-8) a row may have.
MAX_ID_LENGTH = 256
#: Index types this back end builds, with their build parameters and the search parameter that trades speed for recall.
INDEX_TYPES: Dict[str, Tuple[Dict[str, int], Dict[str, int]]] = {
    "FLAT": ({}, {}),
    "HNSW": ({"M": 16, "efConstruction": 200}, {"ef": 128}),
    "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 32}),
}
#: A filtered search whose filter keeps at most this many rows is answered exactly (their vectors read back and
#: ranked here): Milvus Lite's HNSW with a selective filter misses most neighbours (recall@10 ~0.2-0.5 at 1% of
#: rows, benchmarks/milvus_ann.md), and Milvus itself switches to brute force on such filters too. The bound is
#: Milvus's largest query window.
EXACT_FILTER_ROWS = 16_384
#: Types a scalar field (a typed, indexed copy of a metadata key) may have, and the longest VARCHAR (bytes of UTF-8).
SCALAR_TYPES = ("VARCHAR", "INT64")
MAX_SCALAR_BYTES = 4_096
#: Rows per insert/upsert call (keeps every gRPC message far below Milvus's 64 MiB limit at 768-d).
WRITE_BATCH = 2_000
#: Rows per page when reading every row's metadata.
READ_BATCH = 4_000
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _IteratorNoise(logging.Filter):
    """Drops the two log records every paged read makes on Milvus Lite, which lacks the ``AllocTimestamp`` call
    pymilvus's query iterator tries first (it then falls back to a client-side timestamp, correctly)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "mvccTs" not in message and "Method not implemented" not in message


for _name in ("pymilvus", "pymilvus.client.iterator.query_iterator", "grpc._server"):
    logging.getLogger(_name).addFilter(_IteratorNoise())


class DatabaseBusyError(InputError):
    """The embedded database's data directory is held by another process (Milvus Lite allows one)."""


def is_embedded(uri: str) -> bool:
    """Whether ``uri`` names an embedded Milvus Lite database (a local path ending in ``.db``)."""
    return "://" not in uri


def check_uri(uri: str) -> str:
    """``uri`` checked before any work: a local ``NAME.db`` path whose parent folder exists and that is not a
    regular file, or an ``http(s)://HOST:PORT`` address. Returns the path made absolute (embedded) or ``uri``."""
    if not isinstance(uri, str) or not uri:
        raise InputError("the database must be a path ending in .db or an http://HOST:PORT address")
    if not is_embedded(uri):
        if not re.match(r"^https?://[^/\s]+(:\d+)?/?$", uri):
            raise InputError(f"--uri {uri!r}: expected http://HOST:PORT (or https://)")
        return uri
    path = Path(uri).expanduser().absolute()
    if path.suffix != ".db":
        raise InputError(f"--db {uri!r}: the embedded database is a folder whose name ends in .db, e.g. photos.db")
    if not path.parent.is_dir():
        raise InputError(f"--db {uri!r}: folder {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise InputError(f"--db {uri!r}: exists and is not a Milvus Lite data folder")
    return str(path)


def _embedded_lock_free(path: str) -> bool:
    """Whether no other process holds Milvus Lite's lock on data folder ``path`` (a folder not made yet is free)."""
    lock = Path(path) / "LOCK"
    if not lock.exists():
        return True
    import fcntl

    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def open_here(path: str) -> bool:
    """Whether this process serves the embedded database folder ``path`` already."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return False
    return os.path.abspath(path) in getattr(server_manager_instance, "_servers", {})


def connect(uri: str, token: Optional[str] = None) -> Any:
    """A ``pymilvus.MilvusClient`` for ``uri`` (see :func:`check_uri`); :class:`DatabaseBusyError` when another
    process owns the embedded data folder, :class:`InputError` when pymilvus (or milvus-lite) is missing or a
    server does not answer."""
    uri = check_uri(uri)
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise InputError(f"the Milvus back end needs pymilvus and milvus-lite ({exc}); "
                         "pip install 'ernievil2torch[search]'") from None
    if is_embedded(uri) and not open_here(uri) and not _embedded_lock_free(uri):
        raise DatabaseBusyError(
            f"{uri} is open in another process (Milvus Lite lets one process own a database folder): stop it, or "
            "serve the folder with `milvus-lite server --data-dir ... --host 127.0.0.1` and pass --uri to every command")
    try:
        return MilvusClient(uri=uri, token=token or "", timeout=30)
    except Exception as exc:  # pymilvus raises its own MilvusException family, and grpc errors for a dead server
        raise InputError(f"cannot open Milvus at {uri}: {exc}") from None


def release(uri: str) -> None:
    """Close this process's embedded server of ``uri`` (a ``.db`` path), letting another process open the folder;
    nothing for a server address or a folder this process has not opened."""
    if not is_embedded(uri):
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(os.path.abspath(uri))


def filter_expression(where: Optional[MetadataFilter], scalar_fields: Optional[Mapping[str, str]] = None) -> str:
    """The Milvus boolean expression for a metadata filter ('' for none); :class:`InputError` for a key that is not
    an identifier or a value that is not a JSON scalar.

    A key in ``scalar_fields`` (a typed, indexed copy of that metadata key: see :class:`MilvusBackend`) is compared
    on its field whenever the filter value's type fits the field's (a string for VARCHAR, an integer or a
    :class:`Range` for INT64, an :class:`Under` for VARCHAR), which a scalar index answers without reading each row's
    JSON; any other value is compared on the JSON copy, so the result is the same either way."""
    if where is None:
        return ""
    if not isinstance(where, Mapping):
        raise InputError(f"where must be a mapping of metadata key -> value, got {type(where).__name__}")
    typed = scalar_fields or {}
    parts = []
    for key, wanted in where.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InputError(f"filter key {key!r} must be an identifier (letters, digits, _)")
        field = key if _fits(typed.get(key), wanted) else f'metadata["{key}"]'
        if isinstance(wanted, Range):
            if field == key:
                wanted = Range(None if wanted.low is None else math.ceil(_finite(wanted.low)),
                               None if wanted.high is None else math.floor(_finite(wanted.high)))
            bounds = [f"{field} >= {_number(wanted.low)}" if wanted.low is not None else "",
                      f"{field} <= {_number(wanted.high)}" if wanted.high is not None else ""]
            bounds = [b for b in bounds if b] or ([f"{field} is not null"] if field == key else [f"exists {field}"])
            parts.append("(" + " and ".join(bounds) + ")")
        elif isinstance(wanted, Contains):
            parts.append(f"json_contains({field}, {_literal(wanted.value)})")
        elif isinstance(wanted, Under):
            parts.append(_under(field, wanted.folder))
        else:
            parts.append(f"{field} == {_literal(wanted)}")
    return " and ".join(parts)


def _fits(field_type: Optional[str], wanted: Any) -> bool:
    """Whether filter value ``wanted`` can be compared on a scalar field of ``field_type`` with the JSON result."""
    if field_type == "VARCHAR":
        return isinstance(wanted, (str, Under))
    if field_type == "INT64":
        return isinstance(wanted, Range) or (isinstance(wanted, int) and not isinstance(wanted, bool))
    return False


def _under(field: str, folder: str) -> str:
    """``field`` is ``folder`` or a path inside it: a string range (every ``folder/...`` sorts from ``folder/`` up to,
    not including, ``folder0``, ``0`` being the character after ``/``), which a scalar index answers."""
    if not folder:
        return f'{field} >= ""'
    return (f"({field} == {_literal(folder)} or ({field} >= {_literal(folder + '/')} and "
            f"{field} < {_literal(folder + '0')}))")


def _finite(value: Any) -> Any:
    """``value`` when it is a finite number (a range bound), else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"a range bound must be a finite number, got {value!r}")
    return value


def _number(value: Any) -> str:
    return repr(_finite(value))


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise InputError(f"a filter value must be a string, number or boolean, got {type(value).__name__}")


class MilvusBackend:
    """Rows in one Milvus collection (made on first use; an existing one must have the same ``dim``).

    Beyond the protocol: :meth:`upsert` (insert or replace by id, what an indexer that may be re-run needs),
    :meth:`rows` (every row's id and metadata, paged) and :meth:`get_many`.

    ``scalar_fields`` (metadata key -> ``VARCHAR`` or ``INT64``) copies those keys of every row's metadata into
    typed fields with a scalar (``INVERTED``) index, so filters on them cost an index lookup instead of parsing every
    row's JSON (Milvus Lite: ~0.04 s instead of ~1.5 s per filtered query at 20k rows). A row's value there must be
    of that type or missing/None. They are part of the collection: an existing collection without them is refused.
    """

    def __init__(self, dim: int, uri: str, token: Optional[str] = None, collection: str = "vectors",
                 index_type: str = "FLAT", index_params: Optional[Mapping[str, int]] = None,
                 search_params: Optional[Mapping[str, int]] = None, client: Any = None,
                 scalar_fields: Optional[Mapping[str, str]] = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}")
        if index_type not in INDEX_TYPES:
            raise InputError(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        if not _KEY.match(collection or ""):
            raise InputError(f"collection name {collection!r} must be an identifier (letters, digits, _)")
        build, search = INDEX_TYPES[index_type]
        self.scalar_fields = _checked_scalar_fields(scalar_fields or {})
        self._dim = dim
        self.uri = uri
        self.collection = collection
        self.index_type = index_type
        self.index_params = {**build, **(index_params or {})}
        self.search_params = {**search, **(search_params or {})}
        self.client = client if client is not None else connect(uri, token)
        self._ensure_collection()

    # ---- the protocol ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return f"milvus-{self.index_type.lower()}"

    def count(self) -> int:
        result = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                   consistency_level="Strong")
        return int(result[0]["count(*)"])

    def add(self, vectors: np.ndarray, ids: Sequence[str],
            metadata: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        rows = self._rows(vectors, ids, metadata)
        taken = self._held([row["id"] for row in rows])
        if taken:
            raise InputError(f"{len(taken)} ids are already held (first: {taken[0]!r}); remove them first")
        for start in range(0, len(rows), WRITE_BATCH):
            self.client.insert(self.collection, rows[start:start + WRITE_BATCH])

    def upsert(self, vectors: np.ndarray, ids: Sequence[str],
               metadata: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        """Insert the rows, replacing any held under the same ids (each row replaced whole, atomically)."""
        rows = self._rows(vectors, ids, metadata)
        for start in range(0, len(rows), WRITE_BATCH):
            self.client.upsert(self.collection, rows[start:start + WRITE_BATCH])

    def remove(self, ids: Sequence[str]) -> int:
        held = self._held(list(dict.fromkeys(ids)))
        for start in range(0, len(held), WRITE_BATCH):
            self.client.delete(self.collection, ids=held[start:start + WRITE_BATCH])
        return len(held)

    def search(self, queries: np.ndarray, k: int, where: Optional[MetadataFilter] = None,
               offset: int = 0) -> List[List[BackendHit]]:
        queries = checked_vectors(queries, self._dim, "queries")
        check_page(k, offset)
        expression = filter_expression(where, self.scalar_fields)
        if queries.shape[0] == 0:
            return []
        if expression and self.index_type != "FLAT":
            # the passing ids, one more than the bound at most: Milvus Lite answers a filtered count(*) by
            # materialising every passing row whole (vectors included: gigabytes for a broad filter at 1M rows),
            # while a bounded id query stops after the bound
            passing = self.client.query(self.collection, filter=expression, output_fields=["id"],
                                        limit=EXACT_FILTER_ROWS + 1, consistency_level="Strong")
            if len(passing) <= EXACT_FILTER_ROWS:
                return self._exact(queries, int(k), int(offset), [str(row["id"]) for row in passing])
        results = self.client.search(
            self.collection, data=queries.tolist(), limit=int(k), offset=int(offset), filter=expression,
            output_fields=["metadata"], consistency_level="Strong",
            search_params={"metric_type": "IP", "params": dict(self.search_params)})
        return [[BackendHit(str(hit["id"]), float(hit["distance"]), hit["entity"].get("metadata") or {})
                 for hit in hits] for hits in results]

    def fetch(self, id: str) -> StoredVector:
        found = self.get_many([id], with_vectors=True)
        if not found:
            raise UnknownIdError(f"no row with id {id!r}")
        return found[0]

    def _exact(self, queries: np.ndarray, k: int, offset: int, ids: List[str]) -> List[List[BackendHit]]:
        """Exact ranking of the (few) rows ``ids`` (read back by id, a point read for each): score descending,
        ties by id."""
        rows = sorted(self.get_many(ids, with_vectors=True), key=lambda row: row.id)
        if not rows:
            return [[] for _ in range(queries.shape[0])]
        scores = queries @ np.stack([row.vector for row in rows]).T
        out = []
        for line in scores:
            order = np.argsort(-line, kind="stable")[offset:offset + k]
            out.append([BackendHit(rows[j].id, float(line[j]), rows[j].metadata) for j in order])
        return out

    # ---- beyond the protocol -----------------------------------------------------------------------------------
    def get_many(self, ids: Sequence[str], with_vectors: bool = True) -> List[StoredVector]:
        """The rows of ``ids`` that are held (in no particular order); vectors empty unless ``with_vectors``."""
        fields = ["vector", "metadata"] if with_vectors else ["metadata"]
        out: List[StoredVector] = []
        ids = [item for item in ids if isinstance(item, str)]
        for start in range(0, len(ids), READ_BATCH):
            for row in self.client.get(self.collection, ids=ids[start:start + READ_BATCH], output_fields=fields,
                                       consistency_level="Strong"):
                vector = np.asarray(row["vector"], np.float32) if with_vectors else np.zeros(0, np.float32)
                out.append(StoredVector(str(row["id"]), vector, row.get("metadata") or {}))
        return out

    def rows(self, where: Optional[MetadataFilter] = None) -> Iterator[Tuple[str, Mapping[str, Any]]]:
        """Every row's ``(id, metadata)`` passing ``where``, read ``READ_BATCH`` at a time (no vectors)."""
        for row in self._paged(filter_expression(where, self.scalar_fields), "metadata"):
            yield str(row["id"]), row.get("metadata") or {}

    def drop(self) -> None:
        """Delete the whole collection."""
        self.client.drop_collection(self.collection)

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _paged(self, expression: str, field: str) -> Iterator[Mapping[str, Any]]:
        """The rows passing ``expression`` with their id and ``field``, one page of ``READ_BATCH`` at a time."""
        iterator = self.client.query_iterator(self.collection, batch_size=READ_BATCH, filter=expression,
                                              output_fields=[field], consistency_level="Strong")
        try:
            while True:
                page = iterator.next()
                if not page:
                    return
                yield from page
        finally:
            iterator.close()

    def _ensure_collection(self) -> None:
        from pymilvus import DataType

        if self.client.has_collection(self.collection):
            described = self.client.describe_collection(self.collection)
            dims = [int(f.get("params", {}).get("dim", 0)) for f in described["fields"] if f["name"] == "vector"]
            if dims != [self._dim]:
                raise InputError(f"collection {self.collection!r} at {self.uri} holds {dims[0] if dims else '?'}-d "
                                 f"vectors, not {self._dim}-d ones")
            held = {f["name"]: getattr(f["type"], "name", str(f["type"])) for f in described["fields"]}
            missing = [f"{key} ({kind})" for key, kind in self.scalar_fields.items() if held.get(key) != kind]
            if missing:
                raise InputError(f"collection {self.collection!r} at {self.uri} has no indexed field "
                                 f"{', '.join(missing)}: it was made without it (by an earlier version); rebuild it "
                                 "(remove it and write the rows again)")
            self.client.load_collection(self.collection)
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        schema.add_field("metadata", DataType.JSON)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type=self.index_type, metric_type="IP", params=dict(self.index_params))
        for key, kind in self.scalar_fields.items():
            if kind == "VARCHAR":
                schema.add_field(key, DataType.VARCHAR, max_length=MAX_SCALAR_BYTES, nullable=True)
            else:
                schema.add_field(key, DataType.INT64, nullable=True)
            index.add_index(key, index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")

    def _held(self, ids: List[str]) -> List[str]:
        held = {row.id for row in self.get_many(ids, with_vectors=False)}
        return [item for item in ids if item in held]

    def _rows(self, vectors: np.ndarray, ids: Sequence[str],
              metadata: Optional[Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
        array, ids, metadata = checked_rows(vectors, ids, metadata, self._dim)
        for index, item in enumerate(ids):
            if not item or len(item.encode("utf-8")) > MAX_ID_LENGTH:
                raise InputError(f"ids[{index}] must be 1..{MAX_ID_LENGTH} bytes of UTF-8")
        out = []
        for index, (item, row, entry) in enumerate(zip(ids, array, metadata)):
            line = {"id": item, "vector": row.tolist(), "metadata": entry}
            for key, kind in self.scalar_fields.items():
                line[key] = _scalar(entry.get(key), kind, f"metadata[{index}][{key!r}]")
            out.append(line)
        return out


def _checked_scalar_fields(fields: Mapping[str, str]) -> Dict[str, str]:
    if not isinstance(fields, Mapping):
        raise InputError(f"scalar_fields must map metadata keys to {' or '.join(SCALAR_TYPES)}")
    for key, kind in fields.items():
        if not isinstance(key, str) or not _KEY.match(key) or key in ("id", "vector", "metadata"):
            raise InputError(f"scalar field {key!r} must be an identifier other than id, vector and metadata")
        if kind not in SCALAR_TYPES:
            raise InputError(f"scalar field {key!r}: type must be one of {', '.join(SCALAR_TYPES)}, got {kind!r}")
    return dict(fields)


def _scalar(value: Any, kind: str, where: str) -> Any:
    """A metadata value as its scalar field holds it (None when missing); :class:`InputError` for another type."""
    if value is None:
        return None
    if kind == "INT64":
        if isinstance(value, bool) or not isinstance(value, int) or not -2 ** 63 <= value < 2 ** 63:
            raise InputError(f"{where} must be a 64-bit integer or null, got {value!r}")
        return value
    try:
        size = len(value.encode("utf-8")) if isinstance(value, str) else None
    except UnicodeEncodeError:
        size = None
    if size is None or size > MAX_SCALAR_BYTES:
        raise InputError(f"{where} must be a string of at most {MAX_SCALAR_BYTES} bytes of UTF-8 or null")
    return value
