"""The sharding of an ``embed`` run: planned shards, each written atomically, then joined into the embed output
(whose files :mod:`~ernievil2torch.storage.embeddings` writes and reads).

Output directory layout (``OUT``)::

    OUT/run.json             what is being computed (:mod:`~ernievil2torch.storage.run_record`: a resume
                             must match it, a different run is refused)
    OUT/shards/00000.npy     features of the items of shard 0 that succeeded, input order
    OUT/shards/00000.json    shard metadata (ids, failures); written last, so its presence marks the shard done
    OUT/embeddings.npy       all shards joined, input order (failed items left out)   [N_ok, dim]
    OUT/ids.txt              one id per row of embeddings.npy
    OUT/failed.tsv           id <TAB> reason, for every item that was skipped
    OUT/files.jsonl          image files: the facts of each row's file (root, path, size, mtime, SHA-256,
                             width/height, EXIF time), what `index --from_embeddings` loads
    OUT/manifest.json        counts, dim, dtype, the model's name and hash, the shard list (in input order)

Items are split into shards of ``shard_size`` consecutive inputs; with ``world`` processes shard ``s`` belongs to
rank ``s % world``. A shard is the unit of resumption: a finished one is never computed again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...constants import KERNELS_RESUME_ADVICE
from ...errors import ErnieViL2Error, InputError, OutputExistsError
from ...storage.atomic import atomic_save_npy, atomic_write_bytes
from ...storage.embeddings import MANIFEST_FILE, write_embed_output
from ...storage.outputs import check_output_dir
from ...storage.run_record import check_run_record, read_run_record, write_run_record
from ...data.inputs import Item

SHARD_DIR = "shards"


def run_fingerprint(items: Sequence[Item], **settings: Any) -> Dict[str, Any]:
    """What identifies a run (settings, item count and a hash of the ids): a resume must match it exactly."""
    ids = "\n".join(i.id for i in items).encode("utf-8", "surrogatepass")
    return {**settings, "count": len(items), "ids_sha1": hashlib.sha1(ids).hexdigest()}


#: Advice of the refusal to continue a folder that holds a different run.
START_OVER = f"use another --out, or pass --overwrite to delete it and start over {KERNELS_RESUME_ADVICE}"


def claim_output(out_dir: Path, fingerprint: Dict[str, Any]) -> None:
    """Create ``OUT`` for this run, or check that the run already there is the same one (then it is resumed).

    :class:`InputError` naming every setting that differs when ``OUT/run.json`` holds another run."""
    check_run_record(out_dir, fingerprint, START_OVER)
    (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    if read_run_record(out_dir) is None:
        write_run_record(out_dir, fingerprint)


def is_embed_run(folder: Path) -> bool:
    """Whether ``folder`` holds an ``embed`` run, finished (its ``manifest.json``) or not (a ``run.json`` with the
    keys :func:`run_fingerprint` writes)."""
    if (folder / MANIFEST_FILE).is_file():
        return True
    try:
        record = read_run_record(folder)
    except InputError:  # a damaged or foreign run.json
        return False
    return record is not None and "ids_sha1" in record and "kind" in record


def check_embed_output(out: Path, overwrite: bool, inputs: Sequence[Optional[Union[str, Path]]]) -> None:
    """Refuse an ``OUT`` an embed run may not write into, before any work.

    ``OUT`` must pass :func:`~ernievil2torch.storage.outputs.check_output_dir` (never empty, the current directory
    or above, an input or a folder holding one) and be absent, an empty folder, or an embed output (resumed, or with
    ``overwrite`` deleted and started over): a folder holding anything else is never written into nor deleted.
    """
    check_output_dir(out, overwrite=True, inputs=inputs)
    if out.is_dir() and any(out.iterdir()) and not is_embed_run(out):
        raise OutputExistsError(f"{out} holds files that are not an embed output (no {MANIFEST_FILE} or embed "
                                f"run.json): embed neither writes into nor deletes it; use a new or empty --out")


@dataclass
class ShardPlan:
    """Which inputs each shard holds and which shards this rank still has to compute."""

    bounds: List[Tuple[int, int]]
    mine: List[int]
    todo: List[int]

    @property
    def num_shards(self) -> int:
        return len(self.bounds)


def plan_shards(items: Sequence[Item], shard_size: int, shard_dir: Path, rank: int = 0, world: int = 1,
                bounds: Optional[List[Tuple[int, int]]] = None) -> ShardPlan:
    """Split ``items`` into shards (of ``shard_size``, or the ``[start, stop)`` ranges ``bounds`` gives, e.g. one
    per webdataset ``.tar``), give rank ``rank`` every ``world``-th, and skip those already finished."""
    count = len(items)
    if bounds is None:
        bounds = [(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]
    mine = [s for s in range(len(bounds)) if s % world == rank]
    todo = [s for s in mine if not shard_done(shard_dir, s, [items[i].id for i in range(*bounds[s])])]
    return ShardPlan(bounds, mine, todo)


def shard_done(shard_dir: Path, s: int, expected_ids: List[str]) -> bool:
    """Whether shard ``s`` is complete on disk and holds exactly ``expected_ids`` (successes and failures)."""
    meta_path = shard_dir / f"{s:05d}.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        array = np.load(shard_dir / f"{s:05d}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return False
    all_ids = meta.get("ids", []) + [f["id"] for f in meta.get("failed", [])]
    return array.shape[0] == len(meta.get("ids", [])) and sorted(all_ids) == sorted(expected_ids)


def write_shard(shard_dir: Path, s: int, bounds: Tuple[int, int], items: Sequence[Item], indices: List[int],
                feats: List[np.ndarray], failed: List[Tuple[int, str]], dim: int, save_dtype,
                files: Optional[List[Optional[dict]]] = None) -> None:
    """Write shard ``s``: its features in input order (``.npy``), then its metadata (``.json``, marks it done);
    ``files`` (one record per entry of ``indices``, or None for inputs that are no files) go into the metadata."""
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    array = np.concatenate(feats)[order] if feats else np.zeros((0, dim), np.float32)
    atomic_save_npy(shard_dir / f"{s:05d}.npy", array.astype(save_dtype))
    meta = {"shard": s, "start": bounds[0], "stop": bounds[1], "ids": [items[indices[j]].id for j in order],
            "failed": [{"index": i, "id": items[i].id, "reason": r} for i, r in sorted(failed)]}
    if files is not None:
        meta["files"] = [files[j] for j in order]
    atomic_write_bytes(shard_dir / f"{s:05d}.json", (json.dumps(meta, ensure_ascii=False) + "\n").encode("utf-8"))


def join_shards(out_dir: Path, num_shards: int, kind: str, dim: int, save_dtype, fingerprint: Dict[str, Any],
                model_record: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Concatenate the shards (streamed through a memory map) into the embed output's final files, written by
    :func:`~ernievil2torch.storage.embeddings.write_embed_output` (the manifest also lists the shards and holds
    ``model_record``: the model's name and hash). The file records are joined only when every shard has them (a
    run resumed from shards written before embed recorded them has none: ``index --from_embeddings`` then asks
    for a fresh run)."""
    shard_dir = out_dir / SHARD_DIR
    metas = []
    for s in range(num_shards):
        meta_path = shard_dir / f"{s:05d}.json"
        if not meta_path.is_file():
            raise ErnieViL2Error(f"shard {s} is missing ({meta_path}); re-run the same command to finish it")
        metas.append(json.loads(meta_path.read_text(encoding="utf-8")))
    parts = (np.load(shard_dir / f"{s:05d}.npy", mmap_mode="r") for s in range(num_shards))
    ids = [i for m in metas for i in m["ids"]]
    failed = [(f["id"], f["reason"]) for m in metas for f in m["failed"]]
    shards = [{"file": f"{SHARD_DIR}/{s:05d}.npy", "meta": f"{SHARD_DIR}/{s:05d}.json", "rows": len(m["ids"]),
               "inputs": [m["start"], m["stop"]]} for s, m in enumerate(metas)]
    files = ([f for m in metas for f in m["files"]] if metas and all("files" in m for m in metas) else None)
    write_embed_output(out_dir, parts, ids, failed, kind, dim, save_dtype, records=files,
                       normalized=fingerprint["normalize"], model_dir=fingerprint["model_dir"],
                       **(model_record or {}), shards=shards)
    return {"count": len(ids), "failed": len(failed), "dim": dim, "out": str(out_dir)}
