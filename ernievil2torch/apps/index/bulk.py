"""``ernievil2 index MODEL --from_embeddings OUT``: load an ``embed`` output of images into the index, without the
model: the way a library too big for one machine gets indexed (``embed`` under ``torchrun`` over many processes and
nodes, then one bulk load).

The rows are the rows a folder run (``index MODEL FOLDER``) writes for the same files: the same stable ids, the same
metadata (:func:`~.indexer.row_metadata`, from the file records ``embed`` wrote: ``files.jsonl``), the output's
vectors L2-normalised in float32. So a later folder run over the same folders finds every loaded file unchanged
and embeds nothing.

**Checked before any write** (one :class:`~ernievil2torch.errors.InputError` each): OUT is a finished embed output
(not a run whose shards were not joined, nor a join cut short), of images, made by an ``embed`` that recorded the
model's hash and the files (older outputs: re-run embed), by MODEL (the same hash), of MODEL's dimension, with
well-formed records; then the index must belong to MODEL too (:class:`~.catalog.ModelMismatchError`, unless
``reindex``).

**Files changed since embed ran** are not loaded: each record's file is looked at again (``lstat``); one that is
gone, is no longer a file a folder run follows (a symlink, hidden, another extension), or whose size or mtime
differs from the record is skipped and listed with the reason. No row is written for it (a row it had stays as it
was), so the next folder run sees it as new or changed and embeds it: a vector never describes other bytes than
its row's hash says.

**Resumable**: rows are upserted in batches keyed by their stable ids, and a file whose row already holds the same
size, mtime and content hash is counted as present and not written again. A run killed at any point (SIGKILL
included; ``crash`` point ``bulk-batch-written``) is finished by running the same command again: no duplicate (an
upsert replaces its id), no lost row. The alias searches use moves to the collection only at the end (with
``reindex``, the old model's collection is then dropped), as in a folder run.
"""
from __future__ import annotations

import os
import stat as stat_module
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import InputError
from ...retrieval.milvus import check_uri
from ...runtime.progress import progress_bar
from ...storage.embeddings import MANIFEST_FILE, EmbedOutput, read_embed_output, read_file_records
from ..embed.shards import is_embed_run
from .catalog import Catalog, FolderList
from .crash import crash_point
from .files import RECORD_KEYS, PhotoFile, is_followed
from .indexer import model_dim, row_metadata
from .model_hash import model_fingerprint

#: Rows per write unless ``batch_size`` says otherwise (the back end splits larger writes itself).
BULK_BATCH = 1024
#: The advice for an output that cannot be loaded as it is.
RE_EMBED = ("re-run `ernievil2 embed` with --overwrite (or into a new --out) with this version, which records "
            "the model's hash and each file's facts")
_INT_KEYS = ("size", "mtime_ns", "width", "height")


@dataclass
class BulkReport:
    """What one bulk load did. ``loaded``: rows written now; ``present``: files whose row already held the same
    facts (a resumed or repeated load); ``skipped``: (file or id, reason) of the output's rows not loaded."""

    uri: str
    collection: str
    model: str
    source: str
    loaded: int = 0
    present: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    reindexed_from: Optional[str] = None
    seconds: float = 0.0
    write_seconds: float = 0.0  # checking and writing rows; the rest is opening and closing the database (an
    # embedded Milvus Lite persists its segments and builds their index when it closes)

    def summary(self) -> str:
        lines = [f"indexed {self.uri} (collection {self.collection}, model {self.model}) from {self.source}: "
                 f"{self.rows} rows",
                 f"  loaded {self.loaded}, already present {self.present}, skipped {len(self.skipped)}; no image "
                 f"embedded; {self.seconds:.1f} s in all, {self.write_seconds:.1f} s of it reading and writing rows"]
        if self.reindexed_from:
            lines.append(f"  re-indexed: searches now use {self.collection}; {self.reindexed_from} was dropped")
        lines += [f"  not loaded {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def load_embeddings(model: str, embeddings: str, db: Optional[str] = None, uri: Optional[str] = None,
                    token: Optional[str] = None, reindex: bool = False, batch_size: int = BULK_BATCH,
                    progress: bool = True) -> BulkReport:
    """Load the ``embed`` output ``embeddings`` (of images, made with ``model``) into ``db`` (a Milvus Lite folder
    ``NAME.db``) or ``uri`` (a Milvus server): see the module docstring for what is checked first, what is skipped
    and why a re-run finishes an interrupted load."""
    started = time.perf_counter()
    if (db is None) == (uri is None):
        raise InputError("give the database as --db PATH.db (embedded) or --uri http://HOST:PORT (a server), "
                         "one of them")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError("batch_size must be a positive integer")
    target_uri = check_uri(db if db is not None else uri)
    model_dir = Path(model)
    if not model_dir.is_dir():
        raise InputError(f"model {model!r} is not a directory written by convert.py")
    fingerprint = model_fingerprint(model_dir)
    output, records = read_bulk_source(Path(embeddings), fingerprint, model_dim(model_dir))
    catalog = Catalog.open(target_uri, token)
    try:
        collection = catalog.check_model(fingerprint, reindex)
        report = BulkReport(catalog.uri, collection, model_dir.name, str(embeddings))
        writing = time.perf_counter()
        store = catalog.rows(collection, output.dim)
        broken = catalog.failures(collection)
        _load(output, records, store, broken, catalog.folder_list(collection), report, model_dir.name, fingerprint,
              batch_size, progress)
        report.reindexed_from = catalog.switch_to(collection)
        report.rows = store.count()
        report.write_seconds = time.perf_counter() - writing
    finally:
        catalog.close()
    report.seconds = time.perf_counter() - started
    return report


def read_bulk_source(folder: Path, fingerprint: str, dim: int) -> Tuple[EmbedOutput, List[Optional[dict]]]:
    """The embed output at ``folder`` (memory-mapped) and its file records, after every check of the module
    docstring that needs no database."""
    if not folder.is_dir():
        raise InputError(f"--from_embeddings {folder}: not a folder (an `ernievil2 embed` output is needed)")
    if is_embed_run(folder) and not (folder / MANIFEST_FILE).is_file():
        raise InputError(f"{folder} is an unfinished `ernievil2 embed` run (its shards were never joined: no "
                         f"{MANIFEST_FILE}): run the same embed command again to finish it, then load it")
    output = read_embed_output(folder, mmap=True, kind="image")
    manifest = output.manifest
    if manifest is None:
        raise InputError(f"{folder} has no {MANIFEST_FILE}: it was not written by `ernievil2 embed`, so nothing says "
                         f"which model made it or which files its rows are; {RE_EMBED}")
    if manifest.get("kind") != "image":
        raise InputError(f"{folder} does not say it holds image embeddings ({MANIFEST_FILE} kind "
                         f"{manifest.get('kind')!r}); only an `ernievil2 embed --kind image` output can be indexed")
    if manifest.get("count") != output.count:
        raise InputError(f"{folder}: {MANIFEST_FILE} counts {manifest.get('count')} rows but embeddings.npy holds "
                         f"{output.count} (a join that did not finish): run the same embed command again")
    if manifest.get("model_hash") and not manifest.get("files"):
        raise InputError(f"{folder} records no image files (its inputs were not files on disk, e.g. webdataset "
                         "shards): an index row names a file, so only an embed of a folder, a glob or a list of "
                         "image files can be loaded")
    if not manifest.get("model_hash") or not manifest.get("files"):
        raise InputError(f"{folder} was made by an older `ernievil2 embed` that did not record the model's hash and "
                         f"each file's facts, which the index needs; {RE_EMBED}")
    if manifest["model_hash"] != fingerprint:
        raise InputError(f"{folder} was made by another model (model {manifest.get('model_name')!r}, hash "
                         f"{str(manifest['model_hash'])[:16]}...; this model's hash is {fingerprint[:16]}...): its "
                         "embeddings cannot be compared with this model's; embed the photos with this model, or "
                         "load the output with the model that made it")
    if output.dim != dim:
        raise InputError(f"{folder} holds {output.dim}-d embeddings; this model makes {dim}-d ones")
    records = read_file_records(output)
    if records is None:  # the manifest names the file: read_file_records refused a missing one already
        raise InputError(f"{folder} has no file records; {RE_EMBED}")
    for number, record in enumerate(records, 1):
        problem = None if record is None else _record_problem(record)
        if problem:
            raise InputError(f"{folder}/files.jsonl line {number}: {problem} (a damaged output; {RE_EMBED})")
    return output, records


def _record_problem(record: Dict[str, Any]) -> Optional[str]:
    """What is wrong with one file record, or None."""
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return f"no {', '.join(missing)}"
    root, path = record["root"], record["path"]
    if not isinstance(root, str) or not os.path.isabs(root):
        return "root is not an absolute path"
    if not isinstance(path, str) or not path or path.startswith("/") or any(
            part in ("", ".", "..") for part in path.split("/")):
        return "path is not a relative path inside its root"
    if not isinstance(record["sha256"], str) or len(record["sha256"]) != 64:
        return "sha256 is not a SHA-256 in hex"
    for key in _INT_KEYS:
        if isinstance(record[key], bool) or not isinstance(record[key], int):
            return f"{key} is not an integer"
    return None


def stale_reason(item: PhotoFile) -> Optional[str]:
    """Why the file of a record cannot be loaded as recorded now (None: it is as ``embed`` saw it)."""
    try:
        now = os.lstat(item.absolute)
    except FileNotFoundError:
        return "gone since embed ran"
    except OSError as exc:
        return f"cannot look at it: {exc.strerror or exc}"
    if not stat_module.S_ISREG(now.st_mode) or not is_followed(item.path):
        return ("not a file `index` follows (a symlink, in a hidden folder, or not JPEG/PNG/WebP/HEIC): a folder "
                "run would not index it")
    if (now.st_size, now.st_mtime_ns) != (item.size, item.mtime_ns):
        return "changed since embed ran (size or mtime differs): the next `ernievil2 index MODEL FOLDER` embeds it"
    return None


def _load(output: EmbedOutput, records: Sequence[Optional[dict]], store: Any, broken: Any, folders: FolderList,
          report: BulkReport, model_name: str, fingerprint: str, batch_size: int, progress: bool) -> None:
    rows = dict(store.rows())
    failed = {row_id for row_id, _ in broken.rows()}
    seen: set = set()
    present_folders: set = set()  # listed at the end (an index made before folder lists gets its list so)
    pending: List[Tuple[int, PhotoFile, dict]] = []

    def flush() -> None:
        if not pending:
            return
        vectors = np.asarray(output.embeddings[[index for index, _, _ in pending]], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        ids = [item.id for _, item, _ in pending]
        store.upsert(vectors, ids, [row_metadata(item, record["sha256"], record, model_name, fingerprint)
                                    for _, item, record in pending])
        folders.add(item.folders[-1] for _, item, _ in pending)
        listed_broken = [row_id for row_id in ids if row_id in failed]
        if listed_broken:  # it reads now: no longer a failure a folder run should report
            broken.remove(listed_broken)
        report.loaded += len(pending)
        pending.clear()
        crash_point("bulk-batch-written")

    bar = progress_bar(len(records), "load", progress, unit="row")
    try:
        for index, record in enumerate(records):
            bar.update(1)
            if record is None:
                report.skipped.append((output.ids[index], "no file record (not a local file, or unreadable when "
                                                          "embed ran)"))
                continue
            item = PhotoFile(record["root"], record["path"], record["size"], record["mtime_ns"])
            reason = stale_reason(item)
            if reason is None and item.id in seen:
                reason = "listed twice in the output (loaded once)"
            if reason is not None:
                report.skipped.append((str(item.absolute), reason))
                continue
            seen.add(item.id)
            held = rows.get(item.id)
            if held is not None and (held.get("size"), held.get("mtime_ns"), held.get("sha256")) == (
                    item.size, item.mtime_ns, record["sha256"]):
                report.present += 1
                present_folders.add(item.folders[-1])
                continue
            pending.append((index, item, record))
            if len(pending) >= batch_size:
                flush()
        flush()
        folders.add(present_folders)
    finally:
        bar.close()
