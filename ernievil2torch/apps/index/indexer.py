"""``ernievil2 index``: make a Milvus collection follow photo folders, embedding only what is new.

Each run compares the folders with the rows (no journal: the rows themselves are the state):

1. unchanged (same size and mtime as the row): nothing is read; a file whose size or mtime changed but whose
   content hash did not (touched) gets its row's metadata rewritten, still no model call;
2. a path without a row whose content hash equals a row whose path disappeared in this run: a **move** (the row's
   vector is written under the new path's id, and the old row removed);
3. content already held by a live row, or by another new file of this run: a **copy** (two rows, one embedding);
4. everything else is decoded and embedded in batches; a changed file's row is replaced in one upsert (so there is
   no moment without a row for it); files that cannot be read are listed with the reason and retried only when
   their size or mtime changes;
5. rows of files that are gone are removed last.

Every write is an upsert keyed by the stable id of the path (:func:`~.files.photo_id`) of a complete row, and
removals come after the writes they make redundant, so a run killed at any point (SIGKILL included) leaves rows
that a re-run completes to exactly the rows of an uninterrupted run (tests/apps/index/test_crash.py kills at the
points of :mod:`.crash`).

Writes: Milvus Lite lets one process own an embedded ``photos.db`` folder. ``index`` opens it itself, so it runs
while no service has it open; to index while searching, run the database as a server
(``milvus-lite server --data-dir photos.db --host 127.0.0.1``, or Milvus itself) and give both ``index`` and
``serve`` its ``--uri``: the service searches the alias live and sees each batch as soon as it is written.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import InputError
from ...retrieval.milvus import check_uri, is_embedded
from ...runtime.progress import progress_bar
from .catalog import Catalog, placeholder_vectors
from .crash import crash_point
from .files import PhotoFile, by_hash, content_hash, read_facts, register_heif, scan
from .model_hash import model_fingerprint

#: Files decoded and embedded per model call unless ``batch_size`` says otherwise.
DEFAULT_BATCH = 16
_FILE_KEYS = ("root", "path", "size", "mtime_ns")
#: Photos above this many pixels are listed as failed (a decompression bomb, not a photo: 200 MP is past any camera).
MAX_PIXELS = 200_000_000


def row_metadata(item: PhotoFile, sha: str, facts: Dict[str, Any], model_name: str, model_hash: str) -> dict:
    """The metadata of a photo's row (every writer of rows builds it here: a folder run and a bulk load of an
    ``embed`` output write equal rows): where the file is, its size, mtime and content hash, ``facts`` (``width``,
    ``height``, ``taken``, ``taken_ts``) and the model that made its vector. ``folder`` is the folder it is in and
    ``folders`` that folder and the ones above it (relative to the root; '' is the root itself)."""
    return {"root": item.root, "path": item.path, "folder": item.folders[-1], "folders": item.folders,
            "size": item.size, "mtime_ns": item.mtime_ns, "sha256": sha, "width": facts.get("width"),
            "height": facts.get("height"), "taken": facts.get("taken"), "taken_ts": facts.get("taken_ts"),
            "model": model_name, "model_hash": model_hash}


@dataclass
class IndexReport:
    """What one ``index`` run did. Counts are files; ``embedded`` is images that went through the model (in
    ``model_calls`` batches), the number an unchanged library keeps at zero."""

    uri: str
    collection: str
    model: str
    added: int = 0
    changed: int = 0
    moved: int = 0
    copied: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (root/path, reason)
    embedded: int = 0
    model_calls: int = 0
    rows: int = 0
    reindexed_from: Optional[str] = None
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.embedded / self.embed_seconds:.1f} images/s)" if self.embed_seconds > 0 else ""
        lines = [f"indexed {self.uri} (collection {self.collection}, model {self.model}): {self.rows} rows",
                 f"  added {self.added}, changed {self.changed}, moved {self.moved}, copied {self.copied}, "
                 f"removed {self.removed}, failed {len(self.failed)}, unchanged {self.unchanged}",
                 f"  embedded {self.embedded} images in {self.model_calls} model calls{rate}; "
                 f"{self.seconds:.1f} s in all"]
        if self.reindexed_from:
            lines.append(f"  re-indexed: searches now use {self.collection}; {self.reindexed_from} was dropped")
        lines += [f"  cannot read {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


@dataclass
class _Group:
    """Files of one content hash that need a vector: embedded once (``source`` None) or copied from a row."""

    sha256: str
    files: List[PhotoFile]
    source: Optional[str] = None


def index_photos(model: str, folders: Sequence[str], db: Optional[str] = None, uri: Optional[str] = None,
                 token: Optional[str] = None, reindex: bool = False, batch_size: int = DEFAULT_BATCH,
                 num_workers: int = 2, dtype: str = "float32", device: Optional[str] = None,
                 progress: bool = True) -> IndexReport:
    """Index the photos under ``folders`` with ``model`` into ``db`` (a Milvus Lite folder ``NAME.db``) or ``uri``
    (a Milvus server): see the module docstring.

    Raises :class:`~ernievil2torch.errors.InputError` before any work for: a missing folder, both or neither of
    ``db`` and ``uri``, a model directory without weights, a database held by another process, and (a
    :class:`~.catalog.ModelMismatchError`) an index of another model without ``reindex``.
    """
    started = time.perf_counter()
    if (db is None) == (uri is None):
        raise InputError("give the database as --db PATH.db (embedded) or --uri http://HOST:PORT (a server), one of them")
    if not folders:
        raise InputError("give at least one folder of photos")
    roots = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise InputError(f"photo folder {folder!r} is not a folder")
        roots.append(path.resolve())
    if len(set(roots)) != len(roots) or any(a != b and a.is_relative_to(b) for a in roots for b in roots):
        raise InputError("the photo folders overlap (one is inside another): give each folder once")
    if batch_size < 1 or num_workers < 1:
        raise InputError("batch_size and num_workers must be positive")
    target_uri = check_uri(db if db is not None else uri)
    _check_compute(dtype, device)
    model_dir = Path(model)
    if not model_dir.is_dir():
        raise InputError(f"model {model!r} is not a directory written by convert.py")
    fingerprint = model_fingerprint(model_dir)
    catalog = Catalog.open(target_uri, token)
    try:
        collection = catalog.check_model(fingerprint, reindex)  # a mismatch is refused before the model loads
        run = _Run(catalog, collection, model_dir, fingerprint, batch_size, num_workers, dtype, device, progress)
        report = run.execute(roots)
        report.reindexed_from = catalog.switch_to(collection)
        report.rows = run.store.count()
    finally:
        catalog.close()
    report.seconds = time.perf_counter() - started
    return report


class _Run:
    """One indexing run into one collection."""

    def __init__(self, catalog: Catalog, collection: str, model_dir: Path, fingerprint: str, batch_size: int,
                 num_workers: int, dtype: str, device: Optional[str], progress: bool) -> None:
        self.catalog = catalog
        self.collection = collection
        self.model_dir = model_dir
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dtype = dtype
        self.device = device
        self.progress = progress
        self.pretrained: Any = None
        self.dim = model_dim(model_dir)
        self.store = catalog.rows(collection, self.dim)
        self.broken = catalog.failures(collection)
        self.folders = catalog.folder_list(collection)
        self.report = IndexReport(catalog.uri, collection, model_dir.name)
        self._failed_now: set = set()
        self._written: set = set()  # ids of the rows this run wrote
        self.kinds: Dict[str, str] = {}  # id -> added / changed / moved / copied, as planned

    # ---- planning ----------------------------------------------------------------------------------------------
    def execute(self, roots: Sequence[Path]) -> IndexReport:
        report = self.report
        private = [Path(self.catalog.uri), Path(f"{self.catalog.uri}.thumbs")] if is_embedded(self.catalog.uri) else []
        files = list(scan(roots, skip=private))
        rows = dict(self.store.rows())
        failures = dict(self.broken.rows())
        live = {item.id: item for item in files}
        vanished = {row_id: meta for row_id, meta in rows.items() if row_id not in live}
        hashes = by_hash(rows)
        groups: Dict[str, _Group] = {}
        touched: List[Tuple[PhotoFile, str]] = []
        retried_failures: List[str] = []
        for item in files:
            row = rows.get(item.id)
            if row is not None and (row.get("size"), row.get("mtime_ns")) == (item.size, item.mtime_ns):
                report.unchanged += 1
                continue
            failure = failures.get(item.id)
            if failure is not None and (failure.get("size"), failure.get("mtime_ns")) == (item.size, item.mtime_ns):
                report.failed.append((str(item.absolute), f"{failure.get('reason')} (unchanged since: not retried)"))
                continue
            if failure is not None:
                retried_failures.append(item.id)
            try:
                sha = content_hash(item.absolute)
            except OSError as exc:
                self._fail([item], f"cannot read: {exc.strerror or exc}")
                continue
            if row is not None and row.get("sha256") == sha:
                touched.append((item, item.id))  # only the mtime moved: the row's vector stays right
                report.unchanged += 1
                continue
            groups.setdefault(sha, _Group(sha, [])).files.append(item)
        moved_from: Dict[str, str] = {}
        for sha, group in groups.items():
            holders = [row_id for row_id in hashes.get(sha, []) if rows[row_id].get("sha256") == sha]
            gone = [row_id for row_id in holders if row_id in vanished]
            kept = [row_id for row_id in holders if row_id not in vanished]
            group.source = (gone or kept or [None])[0]
            for item in group.files:
                if item.id in rows:
                    self.kinds[item.id] = "changed"
                elif gone:
                    moved_from[item.id] = gone.pop(0)
                    self.kinds[item.id] = "moved"
                elif group.source is not None or item is not group.files[0]:
                    self.kinds[item.id] = "copied"
                else:
                    self.kinds[item.id] = "added"
        for item, source in touched:
            groups.setdefault(f"touch:{item.id}", _Group(rows[source]["sha256"], [item], source))
        self._write_groups(list(groups.values()), rows)
        if retried_failures:
            done = [row_id for row_id in retried_failures if row_id not in self._failed_now]
            self.broken.remove(done)
        for row_id, kind in self.kinds.items():
            if row_id not in self._failed_now:
                setattr(report, kind, getattr(report, kind) + 1)
        crash_point("before-removals")
        report.removed = len(vanished) - len(moved_from)
        self.store.remove(list(vanished))
        self.broken.remove([row_id for row_id in failures if row_id not in live])
        held = (set(rows) - set(vanished)) | self._written
        self.folders.replace(item.folders[-1] for item in files if item.id in held)
        return report

    def _upsert(self, vectors: np.ndarray, ids: List[str], metadata: List[dict]) -> None:
        """Write photo rows, and list their folders."""
        self.store.upsert(vectors, ids, metadata)
        self._written.update(ids)
        self.folders.add(entry["folder"] for entry in metadata)

    # ---- writing -----------------------------------------------------------------------------------------------
    def _write_groups(self, groups: List[_Group], rows: Dict[str, dict]) -> None:
        copies = [group for group in groups if group.source is not None]
        fresh = [group for group in groups if group.source is None]
        for start in range(0, len(copies), 256):
            chunk = copies[start:start + 256]
            stored = {row.id: row for row in self.store.get_many([group.source for group in chunk])}
            vectors, ids, metadata = [], [], []
            for group in chunk:
                source = stored.get(group.source)
                if source is None:  # removed meanwhile (another writer): embed it instead
                    fresh.append(group)
                    continue
                for item in group.files:
                    vectors.append(source.vector)
                    ids.append(item.id)
                    metadata.append(self._metadata(item, group.sha256, source.metadata))
            if ids:
                self._upsert(np.stack(vectors), ids, metadata)
        if fresh:
            self._embed_groups(fresh, rows)

    def _embed_groups(self, groups: List[_Group], rows: Dict[str, dict]) -> None:
        self._load_model()
        bar = progress_bar(len(groups), "index", self.progress, unit="img")
        try:
            with ThreadPoolExecutor(self.num_workers) as pool:
                batches = [groups[start:start + self.batch_size] for start in range(0, len(groups), self.batch_size)]
                ahead = [pool.submit(self._decode, group) for group in batches[0]] if batches else []
                for number, batch in enumerate(batches):
                    decoded = [future.result() for future in ahead]
                    if number + 1 < len(batches):  # the next batch decodes while this one is in the model
                        ahead = [pool.submit(self._decode, group) for group in batches[number + 1]]
                    good = [(group, crop, facts) for group, (crop, facts, error) in zip(batch, decoded)
                            if error is None]
                    for group, (_, _, error) in zip(batch, decoded):
                        if error is not None:
                            self._fail(group.files, error)
                    if good:
                        began = time.perf_counter()
                        vectors = self._embed([crop for _, crop, _ in good])
                        self.report.embed_seconds += time.perf_counter() - began
                        self.report.embedded += len(good)
                        self.report.model_calls += 1
                        ids, out, metadata = [], [], []
                        for (group, _, facts), vector in zip(good, vectors):
                            for item in group.files:
                                ids.append(item.id)
                                out.append(vector)
                                metadata.append(self._metadata(item, group.sha256, facts))
                        if any(row_id in rows for row_id in ids):
                            crash_point("before-changed-write")
                        self._upsert(np.stack(out), ids, metadata)
                        crash_point("batch-written")
                    bar.update(len(batch))
        finally:
            bar.close()

    def _decode(self, group: _Group) -> Tuple[Optional[np.ndarray], Optional[dict], Optional[str]]:
        """(crop, facts, None) or (None, None, reason) for the group's first file."""
        path = group.files[0].absolute
        try:
            data = path.read_bytes()
            processor = self.pretrained.image_processor
            crop = processor.resize_crop(processor.load_image(data, max_pixels=MAX_PIXELS))
            facts = read_facts(data)
        except InputError as exc:
            return None, None, re.sub(r"^image #0 \([^)]*\): ", "", str(exc))
        except OSError as exc:
            return None, None, f"cannot read: {exc.strerror or exc}"
        except Exception as exc:  # Pillow and its plugins raise many kinds for damaged files
            return None, None, f"cannot decode: {type(exc).__name__}: {exc}"
        return crop, {"width": facts.width, "height": facts.height, "taken": facts.taken,
                      "taken_ts": facts.taken_ts}, None

    def _embed(self, crops: List[np.ndarray]) -> np.ndarray:
        import torch

        model = self.pretrained.model
        pixels = self.pretrained.image_processor.normalize(crops).to(model.device, model.dtype)
        with torch.inference_mode():
            features = model.encode_image(pixels, normalize=True)
        return features.float().cpu().numpy()

    def _metadata(self, item: PhotoFile, sha: str, facts: dict) -> dict:
        return row_metadata(item, sha, facts, self.model_dir.name, self.fingerprint)

    def _fail(self, files: List[PhotoFile], reason: str) -> None:
        for item in files:
            self.report.failed.append((str(item.absolute), reason))
            self._failed_now.add(item.id)
        self.broken.upsert(placeholder_vectors(len(files)), [item.id for item in files],
                           [{**{key: getattr(item, key) for key in _FILE_KEYS}, "reason": reason} for item in files])

    def _load_model(self) -> None:
        if self.pretrained is not None:
            return
        from ...modeling.dtypes import torch_dtype
        from ...pretrained import load_pretrained
        from ...runtime.distributed import pick_device

        register_heif()
        place = pick_device(self.device, local_rank=0)
        self.pretrained = load_pretrained(self.model_dir, dtype=torch_dtype(self.dtype), device=place)


def _check_compute(dtype: str, device: Optional[str]) -> None:
    """A dtype name and a device this machine has, refused before any work."""
    from ...modeling.dtypes import torch_dtype
    from ...runtime.distributed import check_device, pick_device

    torch_dtype(dtype)
    try:
        check_device(str(pick_device(device, local_rank=0)))
    except InputError as exc:
        raise InputError(f"device: {exc}") from None


def model_dim(model_dir: Path) -> int:
    """The embedding size the model makes (read from its config, without loading weights)."""
    from ...config import ErnieViL2Config

    try:
        config = ErnieViL2Config.load(model_dir / "config.json")
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{model_dir}/config.json cannot be read: {exc}") from None
    dims = {config.text.hidden_size, config.vision.hidden_size}
    if len(dims) != 1:
        raise InputError(f"{model_dir}: the towers make {sorted(dims)}-d embeddings; one size is needed")
    return dims.pop()
