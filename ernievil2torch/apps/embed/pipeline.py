"""``embed``: an image or text collection -> ``OUT/embeddings.npy`` + ``OUT/ids.txt``, sharded and resumable.

Runs as one process, or under ``torchrun --nproc_per_node N -m ernievil2torch.embed`` (the process group of
:func:`~ernievil2torch.runtime.distributed.init_distributed_device`): each rank encodes its own shards, rank 0 joins
them after a barrier. The steps, one function each: list the items (:mod:`ernievil2torch.data.inputs`), plan the
shards (:func:`.shards.plan_shards`), encode and write them (:func:`encode_shards`), join (:func:`.shards.join_shards`).
See :mod:`.shards` for the output layout. The library prints nothing: :func:`embed` returns an :class:`EmbedResult`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...config import model_path
from ...constants import DEFAULT_MAX_LENGTH, EMBED_KINDS
from ...errors import InputError
from ...modeling.dtypes import torch_dtype
from ...modeling.kernel_choice import kernel_record
from ...modeling.kernels import REFERENCE
from ...pretrained import load_pretrained
from ...data.inputs import Item, list_texts
from ...data.webdataset import WebDatasetReader, is_webdataset, shard_items
from ...runtime.distributed import first_resolved_kernels, init_distributed_device
from ...runtime.encoding import feature_dim, group_batches, run_batch
from ...runtime.progress import progress_bar
from ...storage.embeddings import EMBEDDINGS_FILE, FAILURES_FILE
from ...storage.run_record import check_run_record
from ..index.files import register_heif
from ..index.model_hash import model_fingerprint
from .file_records import Place, RecordMaker, list_image_files
from .shards import (SHARD_DIR, START_OVER, ShardPlan, check_embed_output, claim_output, join_shards, plan_shards,
                     run_fingerprint, write_shard)


@dataclass
class EmbedResult:
    """What one process of an ``embed`` run did.

    Every process: its ``rank`` of ``world_size`` and its shards (``shards_done_now`` computed, ``shards_skipped``
    found finished on disk). Rank 0, which joins the shards, also has the joined output: ``count`` embedded items
    (rows of ``embeddings.npy``), ``failed`` skipped items (listed in ``failed.tsv``) and the feature ``dim``; on the
    other ranks these are ``None``.
    """

    kind: str
    out: Path
    rank: int
    world_size: int
    shards_done_now: int
    shards_skipped: int
    count: Optional[int] = None
    failed: Optional[int] = None
    dim: Optional[int] = None

    @property
    def joined(self) -> bool:
        """Whether this process joined the shards (rank 0): ``count``, ``failed`` and ``dim`` are set."""
        return self.count is not None

    @property
    def embeddings(self) -> Path:
        return self.out / EMBEDDINGS_FILE

    @property
    def failures(self) -> Path:
        return self.out / FAILURES_FILE

    def summary(self) -> str:
        shards = f"shards: {self.shards_done_now} computed, {self.shards_skipped} reused"
        if not self.joined:
            return f"rank {self.rank} of {self.world_size}: {shards}; rank 0 joins them into {self.embeddings}"
        return (f"embedded {self.count} {self.kind}s ({self.failed} failed, listed in {self.failures}) -> "
                f"{self.embeddings}; {shards}")


def encode_shards(model, items: Sequence[Item], kind: str, plan: ShardPlan, shard_dir: Path, batch_size: int,
                  num_workers: int, tokenizer, max_length: int, normalize: bool, save_dtype, bar,
                  fast_decode: bool = False, places: Optional[Sequence[Place]] = None) -> None:
    """Encode this rank's unfinished shards and write each one as soon as its last batch is done; with ``places``
    (the file of each image item, :mod:`.file_records`) each shard also records the facts of its files."""
    if not plan.todo:
        return
    records = RecordMaker(places, num_workers) if places is not None else None
    try:
        _encode(model, items, kind, plan, shard_dir, batch_size, num_workers, tokenizer, max_length, normalize,
                save_dtype, bar, fast_decode, records)
    finally:
        if records is not None:
            records.close()


def _encode(model, items: Sequence[Item], kind: str, plan: ShardPlan, shard_dir: Path, batch_size: int,
            num_workers: int, tokenizer, max_length: int, normalize: bool, save_dtype, bar, fast_decode: bool,
            records: Optional[RecordMaker]) -> None:
    dim = feature_dim(model, kind)
    remaining = {s: plan.bounds[s][1] - plan.bounds[s][0] for s in plan.todo}
    buffers: Dict[int, Dict[str, list]] = {s: {"idx": [], "feats": [], "failed": []} for s in plan.todo}
    groups = [range(*plan.bounds[s]) for s in plan.todo]
    for s in plan.todo:  # a shard without items (an empty .tar) is done at once: no batch will finish it
        if remaining[s] == 0:
            write_shard(shard_dir, s, plan.bounds[s], items, [], [], [], dim, save_dtype,
                        files=[] if records is not None else None)
            del buffers[s]
    for group, (idx, inputs, bad) in group_batches(items, kind, groups, batch_size, num_workers, model, tokenizer,
                                                   max_length, fast_decode):
        s = plan.todo[group]
        buf = buffers[s]
        buf["failed"].extend(bad)
        if idx:
            if records is not None:
                records.submit(idx)  # hashed on threads while the model runs
            buf["feats"].append(run_batch(model, kind, inputs, normalize))
            buf["idx"].extend(idx)
        remaining[s] -= len(idx) + len(bad)
        bar.update(len(idx) + len(bad))
        if remaining[s] == 0:
            write_shard(shard_dir, s, plan.bounds[s], items, buf["idx"], buf["feats"], buf["failed"], dim,
                        save_dtype, files=records.take(buf["idx"]) if records is not None else None)
            del buffers[s]


def embed(inputs: Union[str, Sequence[str]], model_dir: str, out: str, kind: str = "image", batch_size: int = 64,
          num_workers: int = 2, dtype: str = "float32", shard_size: int = 10000, normalize: bool = False,
          field: str = "text", id_field: Optional[str] = None, max_length: int = DEFAULT_MAX_LENGTH,
          vocab: Optional[str] = None, device: Optional[str] = None, progress: bool = True,
          overwrite: bool = False, fast_decode: bool = False) -> EmbedResult:
    """Embed an image or text collection into OUT/embeddings.npy + OUT/ids.txt (input order), resumably.

    Runs as one process, or under ``torchrun --nproc_per_node N`` (each rank encodes its shards, rank 0 joins
    them). Re-running the same command after a crash keeps finished shards. Items that cannot be read are
    skipped and listed in OUT/failed.tsv; the command fails only when nothing succeeded. The model's name and hash
    (OUT/manifest.json) and, for image files, each row's file facts (OUT/files.jsonl: root, path, size, mtime,
    SHA-256, width/height, EXIF time) are recorded, so that `ernievil2 index MODEL --from_embeddings OUT` can load
    the output as index rows.

    Args:
        inputs: for images a folder, a glob ('imgs/**/*.jpg', quoted), a list file (.txt, one path a line)
            or an image file; for texts a .txt (one text a line), .jsonl or .csv/.tsv file; for either a folder
            of webdataset .tar shards (img2dataset layout: ids are the sample keys, texts the .txt captions, one
            embed shard per .tar, damaged samples listed in failed.tsv).
        model_dir: a converted model directory (with vocab.txt for texts, or pass --vocab) or a Hub id (ORG/NAME).
        out: output directory: absent (created), empty, or an embed output (an unfinished one of the same run is
            resumed); never an input, a folder holding one, or the current directory (:func:`check_embed_output`).
        kind: 'image' or 'text'.
        batch_size: items per forward pass.
        num_workers: DataLoader worker processes decoding images (0 = in the main process). Texts are
            tokenised in the main process, a shard at a time, and batched by token length.
        dtype: compute dtype: float32, float16 or bfloat16 (embeddings are saved as float16 for float16,
            else float32).
        shard_size: items per shard (the unit of resumption and of work split between ranks); webdataset
            input: one shard per .tar instead.
        normalize: L2-normalise the embeddings (for cosine search).
        field: the .jsonl field or .csv/.tsv column holding the text.
        id_field: a .jsonl field / .csv column to use as ids (default: the row index).
        max_length: text length in tokens including [CLS]/[SEP] (48 as in the official evaluation).
        vocab: vocab.txt (default MODEL_DIR/vocab.txt).
        device: 'cpu', 'cuda', 'cuda:1' ... (default: the rank's GPU if any, else CPU).
        progress: show a progress bar.
        overwrite: start over, deleting OUT's earlier results (only ever an embed output or an empty folder).
        fast_decode: decode JPEGs at a reduced DCT scale (both sides still >= the model's image size), then the
            official resize: several times faster on photos of many megapixels, pixels slightly different from
            the official pipeline's (BENCHMARKS.md). Images only; recorded with the run, so a resume never mixes.

    Returns:
        this process's :class:`EmbedResult` (on rank 0 with the joined counts; its ``summary()`` is the line to
        show). Raises :class:`InputError` / :class:`OutputExistsError` before any work (OUT untouched until the
        model is loaded) for a bad kind, dtype, size, device, input listing or model, an OUT
        :func:`check_embed_output` refuses, or an OUT that holds a different run; after the run when no item at all
        could be embedded.
    """
    if kind not in EMBED_KINDS:
        raise InputError(f"kind must be one of {', '.join(EMBED_KINDS)}, got {kind!r}")
    if fast_decode and kind != "image":
        raise InputError("fast_decode applies only to --kind image")
    compute_dtype = torch_dtype(dtype)
    if batch_size < 1 or shard_size < 1:
        raise InputError("batch_size and shard_size must be positive")
    out_dir = Path(out)
    sources = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    check_embed_output(out_dir, overwrite, [*sources, model_dir, vocab])
    context = init_distributed_device(device)

    bounds: Optional[List[Tuple[int, int]]] = None
    places: Optional[List[Place]] = None  # image files: recorded for `index --from_embeddings`
    if isinstance(inputs, (str, Path)) and is_webdataset(inputs):  # one embed shard per .tar shard
        items, bounds = shard_items(WebDatasetReader(inputs), kind)
    elif kind == "image":
        items, places = list_image_files(inputs)
    else:
        items = list_texts(inputs, field=field, id_field=id_field)
    if not items:
        raise InputError(f"no {kind} inputs found in {inputs!r}")
    shard_dir = out_dir / SHARD_DIR
    # The CPU inference kernels, the same in every process; recorded: a resume must compute with the same kernels.
    kernels = first_resolved_kernels(context) if context.device.type == "cpu" else REFERENCE
    model_folder = model_path(model_dir)  # a Hub id: its snapshot (the commit it resolved to) marks the run
    fingerprint = run_fingerprint(items, kind=kind, model_dir=str(model_folder.resolve()), dtype=dtype,
                                  normalize=normalize, shard_size=shard_size,
                                  max_length=max_length if kind == "text" else None,
                                  **({"fast_decode": True} if fast_decode else {}),  # absent: runs made before it
                                  **kernel_record(kernels, compute_dtype, context.device))
    if not overwrite:
        check_run_record(out_dir, fingerprint, START_OVER)  # a different run in OUT: refused before the model loads
    loaded = load_pretrained(model_folder, dtype=compute_dtype, device=context.device, vocab=vocab, kernels=kernels)
    tokenizer = loaded.require_tokenizer() if kind == "text" else None
    model = loaded.model
    context.barrier()  # every process has its model before OUT is touched
    if context.is_main:
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)  # an embed output or an empty folder: check_embed_output refused anything else
        claim_output(out_dir, fingerprint)
    context.barrier()

    plan = plan_shards(items, shard_size, shard_dir, context.rank, context.world_size, bounds)
    save_dtype = np.float16 if compute_dtype == torch.float16 else np.float32
    total = sum(plan.bounds[s][1] - plan.bounds[s][0] for s in plan.todo)
    label = f"embed {kind}s" + (f" [rank {context.rank}]" if context.distributed else "")
    bar = progress_bar(total, label, progress and (context.is_main or context.distributed),
                       position=context.rank if context.distributed else 0)
    if kind == "image":
        register_heif()  # before the decoding workers fork: HEIC/HEIF photos decode there too
    encode_shards(model, items, kind, plan, shard_dir, batch_size, num_workers, tokenizer, max_length, normalize,
                  save_dtype, bar, fast_decode, places)
    bar.close()

    result = EmbedResult(kind, out_dir, context.rank, context.world_size, shards_done_now=len(plan.todo),
                         shards_skipped=len(plan.mine) - len(plan.todo))
    context.barrier()
    if context.is_main:
        model_record = {"model_name": Path(model_dir).name, "model_hash": model_fingerprint(model_folder)}
        joined = join_shards(out_dir, plan.num_shards, kind, feature_dim(model, kind), save_dtype, fingerprint,
                             model_record)
        result.count, result.failed, result.dim = joined["count"], joined["failed"], joined["dim"]
    context.barrier()
    context.close()
    if result.joined and result.count == 0:
        raise InputError(f"no {kind} could be embedded; see {result.failures}")
    return result
