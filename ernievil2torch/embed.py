"""Batch embedding of image or text collections: sharded, resumable, multi-process (torchrun) and fault tolerant.

Output directory layout (``OUT``)::

    OUT/run.json             what is being computed (checked on resume: a different run is refused)
    OUT/shards/00000.npy     features of the items of shard 0 that succeeded, input order
    OUT/shards/00000.json    shard metadata (ids, failures); written last, so its presence marks the shard done
    OUT/embeddings.npy       all shards joined, input order (failed items left out)   [N_ok, dim]
    OUT/ids.txt              one id per row of embeddings.npy
    OUT/failed.tsv           id <TAB> reason, for every item that was skipped
    OUT/manifest.json        counts, dim, dtype and the shard list (in input order)

Items are split into shards of ``shard_size`` consecutive inputs; under ``torchrun`` shard ``s`` goes to rank
``s % WORLD_SIZE``, every rank writes its own shards, and rank 0 joins them after a barrier. A killed run restarts
where it stopped: finished shards are kept and skipped (also with a different number of processes).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import ErnieViL2Error, InputError
from .jsonl import iter_jsonl

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
TEXT_LIST_EXTENSIONS = {".txt", ".lst", ".list"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class Item:
    """One input: its id (written to ids.txt), the source (path, bytes or text) and an error known up front."""

    id: str
    source: Any
    error: Optional[str] = None


# ---- input listing --------------------------------------------------------------------------------------------
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
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
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


# ---- datasets run in DataLoader workers -----------------------------------------------------------------------
class _ImageDataset(Dataset):
    def __init__(self, items: Sequence[Item], image_size: int, resample: str = "official") -> None:
        self.items, self.image_size, self.resample = items, image_size, resample
        self._processor = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if item.error:
            return index, None, item.error
        if self._processor is None:
            from .image_processing import ErnieViL2ImageProcessor

            self._processor = ErnieViL2ImageProcessor(image_size=self.image_size, resample=self.resample)
        try:
            return index, self._processor([item.source])[0], None
        except Exception as exc:  # one bad file must not stop the run
            return index, None, f"{type(exc).__name__}: {exc}"


class _TextDataset(Dataset):
    def __init__(self, items: Sequence[Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        return index, (None if item.error else item.source), item.error


class _Collate:
    """Stacks pixels, or tokenises texts (in the worker); keeps failures aside."""

    def __init__(self, tokenizer=None, max_length: int = 48) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, batch):
        ok = [(i, x) for i, x, err in batch if err is None]
        failed = [(i, err) for i, x, err in batch if err is not None]
        if self.tokenizer is not None and ok:
            good = []
            for i, text in ok:  # a text the tokenizer rejects fails alone
                try:
                    self.tokenizer.encode(text)
                    good.append((i, text))
                except Exception as exc:
                    failed.append((i, f"{type(exc).__name__}: {exc}"))
            ok = good
        indices = [i for i, _ in ok]
        if not ok:
            return indices, None, failed
        if self.tokenizer is None:
            return indices, torch.stack([x for _, x in ok]), failed
        enc = self.tokenizer([t for _, t in ok], max_length=self.max_length, padding="max_length",
                             return_tensors="pt")
        return indices, (enc["input_ids"], enc["attention_mask"]), failed


class _ListBatchSampler(Sampler):
    def __init__(self, batches: List[List[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _make_loader(items: Sequence[Item], kind: str, batches: List[List[int]], num_workers: int, model,
                 tokenizer=None, max_length: int = 48) -> DataLoader:
    if kind == "image":
        dataset: Dataset = _ImageDataset(items, model.config.vision.image_size)
        collate = _Collate()
    else:
        dataset = _TextDataset(items)
        collate = _Collate(tokenizer, max_length)
    return DataLoader(dataset, batch_sampler=_ListBatchSampler(batches), num_workers=num_workers,
                      collate_fn=collate, pin_memory=False)


@torch.no_grad()
def _run_batch(model, kind: str, inputs, normalize: bool) -> np.ndarray:
    if kind == "image":
        feats = model.encode_image(inputs.to(model.device, model.dtype), normalize=normalize)
    else:
        feats = model.encode_text(inputs[0], inputs[1], normalize=normalize)
    return feats.float().cpu().numpy()


def encode_items(model, items: Sequence[Item], kind: str, batch_size: int = 64, num_workers: int = 0,
                 tokenizer=None, max_length: int = 48, normalize: bool = False, progress: bool = False
                 ) -> Tuple[np.ndarray, List[int], List[Tuple[int, str]]]:
    """Encode items in memory: (features of the successes [n_ok, dim] float32, their indices, failures)."""
    batches = [list(range(i, min(i + batch_size, len(items)))) for i in range(0, len(items), batch_size)]
    loader = _make_loader(items, kind, batches, num_workers, model, tokenizer, max_length)
    feats, indices, failed = [], [], []
    bar = _progress(len(items), f"encode {kind}s", progress)
    for idx, inputs, bad in loader:
        failed.extend(bad)
        if idx:
            feats.append(_run_batch(model, kind, inputs, normalize))
            indices.extend(idx)
        bar.update(len(idx) + len(bad))
    bar.close()
    dim = model.config.text.hidden_size if kind == "text" else model.config.vision.hidden_size
    array = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    return array, indices, sorted(failed)


def _progress(total: int, desc: str, enabled: bool, position: int = 0):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, n=1): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, desc=desc, disable=not enabled, position=position, unit="item", dynamic_ncols=True,
                file=sys.stderr)


# ---- sharded, resumable run -----------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _shard_done(shard_dir: Path, s: int, expected_ids: List[str]) -> bool:
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


def _dist_info() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def embed(inputs: Union[str, Sequence[str]], model_dir: str, out: str, kind: str = "image", batch_size: int = 64,
          num_workers: int = 2, dtype: str = "float32", shard_size: int = 10000, normalize: bool = False,
          field: str = "text", id_field: Optional[str] = None, max_length: int = 48, vocab: Optional[str] = None,
          device: Optional[str] = None, progress: bool = True, overwrite: bool = False) -> Dict[str, Any]:
    """Embed an image or text collection into OUT/embeddings.npy + OUT/ids.txt (input order), resumably.

    Runs as one process, or under ``torchrun --nproc_per_node N`` (each rank encodes its shards, rank 0 joins
    them). Re-running the same command after a crash keeps finished shards. Items that cannot be read are
    skipped and listed in OUT/failed.tsv; the command fails only when nothing succeeded.

    Args:
        inputs: for images a folder, a glob ('imgs/**/*.jpg', quoted), a list file (.txt, one path a line)
            or an image file; for texts a .txt (one text a line), .jsonl or .csv/.tsv file.
        model_dir: a converted model directory (with vocab.txt for texts, or pass --vocab).
        out: output directory (created; an unfinished one of the same run is resumed).
        kind: 'image' or 'text'.
        batch_size: items per forward pass.
        num_workers: DataLoader worker processes for decoding / tokenising (0 = in the main process).
        dtype: compute dtype: float32, float16 or bfloat16 (embeddings are saved as float16 for float16,
            else float32).
        shard_size: items per shard (the unit of resumption and of work split between ranks).
        normalize: L2-normalise the embeddings (for cosine search).
        field: the .jsonl field or .csv/.tsv column holding the text.
        id_field: a .jsonl field / .csv column to use as ids (default: the row index).
        max_length: text length in tokens including [CLS]/[SEP] (48 as in the official evaluation).
        vocab: vocab.txt (default MODEL_DIR/vocab.txt).
        device: 'cpu', 'cuda', 'cuda:1' ... (default: the rank's GPU if any, else CPU).
        progress: show a progress bar.
        overwrite: start over, deleting OUT's earlier results.
    """
    import shutil

    from .model import ErnieViL2

    if kind not in ("image", "text"):
        raise InputError(f"kind must be 'image' or 'text', got {kind!r}")
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be one of {sorted(set(_DTYPES))}, got {dtype!r}")
    if batch_size < 1 or shard_size < 1:
        raise InputError("batch_size and shard_size must be positive")
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")

    items = list_images(inputs) if kind == "image" else list_texts(inputs, field=field, id_field=id_field)
    if not items:
        raise InputError(f"no {kind} inputs found in {inputs!r}")
    out_dir = Path(out)
    shard_dir = out_dir / "shards"
    fingerprint = {
        "kind": kind, "model_dir": str(Path(model_dir).resolve()), "dtype": dtype, "normalize": normalize,
        "shard_size": shard_size, "max_length": max_length if kind == "text" else None, "count": len(items),
        "ids_sha1": hashlib.sha1("\n".join(i.id for i in items).encode("utf-8", "surrogatepass")).hexdigest(),
    }
    if rank == 0:
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)
        shard_dir.mkdir(parents=True, exist_ok=True)
        run_file = out_dir / "run.json"
        if run_file.is_file():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous != fingerprint:
                changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                raise InputError(f"{out_dir} holds a different run (differs in {changed}); use another --out or "
                                 "--overwrite")
        else:
            _atomic_write_bytes(run_file, (json.dumps(fingerprint, indent=2) + "\n").encode("utf-8"))
    if distributed:
        dist.barrier()

    model = ErnieViL2.from_pretrained(model_dir, dtype=_DTYPES[dtype], device=device)
    tokenizer = None
    if kind == "text":
        from .tokenizer import ErnieViL2Tokenizer

        vocab_path = Path(vocab) if vocab else Path(model_dir) / "vocab.txt"
        if not vocab_path.is_file():
            raise InputError(f"no vocab file at {vocab_path}; pass --vocab")
        tokenizer = ErnieViL2Tokenizer(vocab_path)

    num_shards = (len(items) + shard_size - 1) // shard_size
    bounds = [(s * shard_size, min((s + 1) * shard_size, len(items))) for s in range(num_shards)]
    mine = [s for s in range(num_shards) if s % world == rank]
    todo = [s for s in mine if not _shard_done(shard_dir, s, [items[i].id for i in range(*bounds[s])])]
    skipped = len(mine) - len(todo)
    save_dtype = np.float16 if _DTYPES[dtype] == torch.float16 else np.float32
    dim = model.config.vision.hidden_size if kind == "image" else model.config.text.hidden_size

    batches, batch_shard = [], []
    for s in todo:
        start, stop = bounds[s]
        for b in range(start, stop, batch_size):
            batches.append(list(range(b, min(b + batch_size, stop))))
            batch_shard.append(s)
    remaining = {s: bounds[s][1] - bounds[s][0] for s in todo}
    buffers: Dict[int, Dict[str, list]] = {s: {"idx": [], "feats": [], "failed": []} for s in todo}
    bar = _progress(sum(remaining.values()), f"embed {kind}s" + (f" [rank {rank}]" if distributed else ""),
                    progress and (rank == 0 or distributed), position=rank if distributed else 0)
    if batches:
        loader = _make_loader(items, kind, batches, num_workers, model, tokenizer, max_length)
        for b, (idx, inputs_, bad) in enumerate(loader):
            s = batch_shard[b]
            buf = buffers[s]
            buf["failed"].extend(bad)
            if idx:
                buf["feats"].append(_run_batch(model, kind, inputs_, normalize))
                buf["idx"].extend(idx)
            remaining[s] -= len(idx) + len(bad)
            bar.update(len(idx) + len(bad))
            if remaining[s] == 0:
                order = np.argsort(np.asarray(buf["idx"], dtype=np.int64), kind="stable")
                feats = np.concatenate(buf["feats"])[order] if buf["feats"] else np.zeros((0, dim), np.float32)
                _atomic_save_npy(shard_dir / f"{s:05d}.npy", feats.astype(save_dtype))
                meta = {"shard": s, "start": bounds[s][0], "stop": bounds[s][1],
                        "ids": [items[buf["idx"][j]].id for j in order],
                        "failed": [{"index": i, "id": items[i].id, "reason": r} for i, r in sorted(buf["failed"])]}
                _atomic_write_bytes(shard_dir / f"{s:05d}.json",
                                    (json.dumps(meta, ensure_ascii=False) + "\n").encode("utf-8"))
                del buffers[s]
    bar.close()

    summary: Dict[str, Any] = {"rank": rank, "world_size": world, "shards_done_now": len(todo),
                               "shards_skipped": skipped}
    if distributed:
        dist.barrier()
    if rank == 0:
        summary.update(_join(out_dir, num_shards, kind, dim, save_dtype, fingerprint))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        print(f"embedded {summary['count']} {kind}s ({summary['failed']} failed, listed in "
              f"{out_dir / 'failed.tsv'}) -> {out_dir / 'embeddings.npy'}; shards: {len(todo)} computed, "
              f"{skipped} reused", file=sys.stderr)
        if summary["count"] == 0:
            raise InputError(f"no {kind} could be embedded; see {out_dir / 'failed.tsv'}")
    return summary


def _join(out_dir: Path, num_shards: int, kind: str, dim: int, save_dtype, fingerprint: dict) -> Dict[str, Any]:
    """Concatenate the shards (streamed through a memory map) and write ids, failures and the manifest."""
    shard_dir = out_dir / "shards"
    metas = []
    for s in range(num_shards):
        meta_path = shard_dir / f"{s:05d}.json"
        if not meta_path.is_file():
            raise ErnieViL2Error(f"shard {s} is missing ({meta_path}); re-run the same command to finish it")
        metas.append(json.loads(meta_path.read_text(encoding="utf-8")))
    total = sum(len(m["ids"]) for m in metas)
    tmp = out_dir / f".embeddings.npy.tmp-{os.getpid()}.npy"
    joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=save_dtype, shape=(total, dim))
    row = 0
    for s, meta in enumerate(metas):
        part = np.load(shard_dir / f"{s:05d}.npy", mmap_mode="r")
        joined[row:row + part.shape[0]] = part
        row += part.shape[0]
    joined.flush()
    del joined
    os.replace(tmp, out_dir / "embeddings.npy")
    ids = [i for m in metas for i in m["ids"]]
    failed = [f for m in metas for f in m["failed"]]

    def clean(text: str) -> str:
        return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")

    _atomic_write_bytes(out_dir / "ids.txt", "".join(clean(i) + "\n" for i in ids).encode("utf-8"))
    _atomic_write_bytes(out_dir / "failed.tsv", "".join(f"{clean(f['id'])}\t{clean(f['reason'])}\n"
                                                       for f in failed).encode("utf-8"))
    manifest = {
        "kind": kind, "count": total, "failed": len(failed), "dim": dim, "dtype": np.dtype(save_dtype).name,
        "normalized": fingerprint["normalize"], "model_dir": fingerprint["model_dir"],
        "embeddings": "embeddings.npy", "ids": "ids.txt", "failures": "failed.tsv",
        "shards": [{"file": f"shards/{s:05d}.npy", "meta": f"shards/{s:05d}.json", "rows": len(m["ids"]),
                    "inputs": [m["start"], m["stop"]]} for s, m in enumerate(metas)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return {"count": total, "failed": len(failed), "dim": dim, "out": str(out_dir)}


def load_embeddings(out: str) -> Tuple[np.ndarray, List[str]]:
    """Read OUT/embeddings.npy and OUT/ids.txt written by :func:`embed`."""
    out_dir = Path(out)
    ids = (out_dir / "ids.txt").read_text(encoding="utf-8").splitlines()
    return np.load(out_dir / "embeddings.npy"), ids


if __name__ == "__main__":  # python -m ernievil2torch.embed ... (also under torchrun)
    from .cli import run_command

    run_command(embed, name="embed")
