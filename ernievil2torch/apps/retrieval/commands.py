"""The retrieval commands: ``search`` (top-k over embedding folders) and ``eval`` (zero-shot recall of a model)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch.nn.functional as F

from ...constants import DEFAULT_MAX_LENGTH, PROTOCOLS
from ...errors import InputError
from ...modeling.dtypes import torch_dtype
from ...pretrained import load_pretrained
from ...storage.atomic import atomic_file, atomic_write_bytes
from ...storage.embeddings import read_embed_output, read_embeddings_npy
from ...storage.outputs import check_output_file
from ...data.formats import open_dataset, require_random_access
from ...data.readers import IndexedCaptions
from ...retrieval.metrics import as_float32_tensor, format_table, retrieval_metrics
from ...retrieval.topk import NormalizedRows, faiss_available, search_embeddings
from ...runtime.distributed import pick_device
from ...runtime.encoding import encode_items


def _load_side(spec: str) -> Tuple[np.ndarray, List[str]]:
    """An ``embed`` output folder (memory-mapped embeddings, its ids) or a bare .npy (ids = row numbers), both
    checked alike (:func:`~ernievil2torch.storage.embeddings.read_embed_output`,
    :func:`~ernievil2torch.storage.embeddings.read_embeddings_npy`); :class:`InputError` for a bad one."""
    path = Path(spec)
    if path.is_dir():
        output = read_embed_output(path, mmap=True)
        return output.embeddings, output.ids
    array = read_embeddings_npy(path, mmap=True)
    return array, [str(i) for i in range(array.shape[0])]


@dataclass
class SearchResult:
    """What :func:`search` wrote: ``out`` holds ``k`` (or fewer, for a smaller gallery) rows per query."""

    out: str
    num_queries: int
    num_gallery: int
    k: int
    notes: Tuple[str, ...] = ()

    def summary(self) -> str:
        """The path of the TSV written, after a ``note:`` line per note (e.g. faiss asked for but not installed)."""
        return "\n".join([f"note: {note}" for note in self.notes] + [self.out])


def search(queries: str, gallery: str, out: str, k: int = 10, chunk_size: int = 65536, normalize: bool = True,
           faiss: bool = False) -> SearchResult:
    """Top-k gallery items for every query; writes OUT as TSV: query_id, rank, gallery_id, score.

    Args:
        queries: an `embed` output folder (embeddings.npy + ids.txt) or a .npy file (ids = row numbers).
        gallery: the same for the gallery (read memory-mapped, scanned chunk by chunk).
        out: the TSV to write.
        k: results per query.
        chunk_size: gallery rows per block.
        normalize: L2-normalise queries (per block, also the gallery) so scores are cosines.
        faiss: use faiss.IndexFlatIP if installed.

    Raises :class:`InputError` before writing anything when either side is not a valid embed output or ``.npy``
    of embeddings (2-D floating point, finite, as many ids as rows) or the two sides' dimensions differ.
    """
    check_output_file(out, inputs=[queries, gallery])
    q, q_ids = _load_side(queries)
    g, g_ids = _load_side(gallery)
    if q.shape[1] != g.shape[1]:
        raise InputError(f"the queries ({queries}) have dimension {q.shape[1]} but the gallery ({gallery}) has "
                         f"{g.shape[1]}: both must come from the same model")
    if normalize:
        q = F.normalize(as_float32_tensor(np.asarray(q)), dim=-1).numpy()
        g = NormalizedRows(g)
    notes = ("faiss not installed, used exact torch search",) if faiss and not faiss_available() else ()
    scores, ids = search_embeddings(q, g, k=k, chunk_size=chunk_size, use_faiss=faiss and not notes)
    with atomic_file(out, "w", encoding="utf-8") as handle:
        for row in range(scores.shape[0]):
            for rank in range(scores.shape[1]):
                handle.write(f"{q_ids[row]}\t{rank + 1}\t{g_ids[ids[row, rank]]}\t{scores[row, rank]:.6f}\n")
    return SearchResult(str(out), int(scores.shape[0]), len(g_ids), int(k), notes)


@dataclass
class EncodedDataset:
    """Raw (not normalised) features of a dataset: ``text_feats`` [captions, dim], ``image_feats`` [images, dim]
    float32, ``text_image[t]`` the row of caption ``t``'s image, ``image_ids`` per row, and ``skipped``: (id,
    reason) of every image left out with its captions (only where the format skips damaged samples)."""

    text_feats: np.ndarray
    image_feats: np.ndarray
    text_image: List[int]
    image_ids: List[str]
    skipped: List[Tuple[str, str]]


def encode_dataset(model, tokenizer, data: IndexedCaptions, batch_size: int = 64, num_workers: int = 0,
                   max_length: int = DEFAULT_MAX_LENGTH, progress: bool = True,
                   fast_decode: bool = False) -> EncodedDataset:
    """Encode every caption and image of ``data``, each image read when its batch is decoded (JPEGs at a reduced
    scale with ``fast_decode``). An unreadable image is an :class:`InputError`, unless the reader skips damaged
    samples (``data.skips_damaged``, webdataset shards): then it is left out with its captions and listed in
    ``skipped``. A caption the tokenizer refuses is always an :class:`InputError`."""
    image_feats, ok, failed = encode_items(model, data.image_items(), "image", batch_size, num_workers,
                                           progress=progress, fast_decode=fast_decode)
    if failed and not getattr(data, "skips_damaged", False):
        shown = "; ".join(f"{data.image_ids[i]}: {r}" for i, r in failed[:5])
        raise InputError(f"{len(failed)} image(s) could not be read: {shown}")
    if not ok:
        raise InputError(f"none of the {data.num_images} images could be read")
    row = {image: number for number, image in enumerate(ok)}
    kept = [t for t, image in enumerate(data.text_image) if image in row]
    items = data.caption_items()
    text_feats, ok_t, failed_t = encode_items(model, [items[t] for t in kept], "text", batch_size, num_workers,
                                              tokenizer, max_length, progress=progress)
    if failed_t:
        shown = "; ".join(f"caption {kept[i]}: {r}" for i, r in failed_t[:5])
        raise InputError(f"{len(failed_t)} caption(s) could not be tokenised: {shown}")
    return EncodedDataset(text_feats, image_feats, [row[data.text_image[t]] for t in kept],
                          [data.image_ids[i] for i in ok], [(data.image_ids[i], reason) for i, reason in failed])


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: ``metrics`` as :func:`~ernievil2torch.retrieval.metrics.retrieval_metrics`
    returns them (also what ``--out`` holds), the counts, and the files written (None where not asked for)."""

    metrics: Dict[str, Any]
    protocol: str
    num_texts: int
    num_images: int
    out: Optional[str] = None
    embeddings: Optional[str] = None
    skipped: Tuple[str, ...] = ()

    def summary(self) -> str:
        """The counts line, the recall table and the mean-recall line; then, where damaged samples were skipped
        (webdataset shards), their count and the first few."""
        lines = [f"{self.metrics['num_texts']} captions, {self.num_images} images, protocol {self.protocol}",
                 format_table(self.metrics), f"MR (mean of the six recalls): {self.metrics['mean_recall']:.2f}"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} damaged sample(s) or shard(s): " + "; ".join(self.skipped[:3])
                         + (" ..." if len(self.skipped) > 3 else ""))
        return "\n".join(lines)


def evaluate(model_dir: str, data: str, images: Optional[str] = None, protocol: str = "grouped",
             batch_size: int = 64, num_workers: int = 2, dtype: str = "float32", device: Optional[str] = None,
             vocab: Optional[str] = None, max_length: int = DEFAULT_MAX_LENGTH, out: Optional[str] = None,
             save_embeddings: Optional[str] = None, progress: bool = True,
             data_format: Optional[str] = None, task: str = "retrieval", split: str = "test",
             fast_decode: bool = False):
    """Zero-shot image-text retrieval: R@1/5/10 both ways and mean recall, ranked by raw cosine (official eval).

    Args:
        model_dir: a converted model directory (with vocab.txt, or pass --vocab) or a Hub id (ORG/NAME).
        data: the official COCO-CN style TSV (text<TAB>image_id<TAB>base64 per line), with --images a
            captions file (.jsonl or .tsv, see ernievil2torch.data.caption_folder), or a folder of webdataset
            .tar shards (img2dataset layout; damaged samples skipped and listed).
        images: image folder for a captions file.
        protocol: 'grouped' (images deduplicated; image->text hit if any of its captions is in the top k) or
            'pairs' (the official script's file mode: every line is one query each way).
        batch_size: encoding batch size.
        num_workers: DataLoader worker processes for image decoding.
        dtype: float32 (default), float16 or bfloat16 compute.
        device: cpu / cuda (default: cuda if available).
        vocab: vocab.txt (default MODEL_DIR/vocab.txt).
        max_length: text length incl. [CLS]/[SEP] (48, official).
        out: write the metrics as JSON here.
        save_embeddings: write text/image features and links to this .npz.
        progress: progress bars.
        data_format: a dataset format name (coco_cn_tsv, caption_folder, webdataset); default: caption_folder
            with --images, webdataset for .tar shards, else coco_cn_tsv.
        task: 'retrieval' (recall both ways) or 'classification': zero-shot accuracy on labelled images in
            CLIP_benchmark's wds/ layout (DATA holds classnames.txt, zeroshot_classification_templates.txt with
            {c}, and SPLIT/*.tar of KEY.png + KEY.cls), computed as CLIP_benchmark does (top-1, top-5, mean
            per-class recall).
        split: the split folder of a classification set (classification only).
        fast_decode: decode JPEGs at a reduced DCT scale (both sides still >= the model's image size), then the
            official resize: faster on large photos, pixels slightly different from the official pipeline's.

    Images are read from DATA as they are encoded, so memory grows with the features, not with the images.
    Returns an :class:`Evaluation` (retrieval) or a
    :class:`~ernievil2torch.apps.zero_shot_accuracy.ZeroShotAccuracy` (classification).
    """
    if task not in ("retrieval", "classification"):
        raise InputError(f"task must be 'retrieval' or 'classification', got {task!r}")
    if task == "classification":
        if fast_decode:
            raise InputError("--fast_decode applies to --task retrieval only")
        return _classification(model_dir, data, split, batch_size, num_workers, dtype, device, vocab, max_length,
                               out, progress, images, save_embeddings, data_format)
    saved: Optional[str] = None
    if save_embeddings:  # np.savez's own naming: ".npz" appended when missing
        saved = str(save_embeddings) if str(save_embeddings).endswith(".npz") else f"{save_embeddings}.npz"
    for written in (out, saved):
        if written:
            check_output_file(written, inputs=[model_dir, data, images, vocab])
    compute_dtype = torch_dtype(dtype)
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be 'grouped' or 'pairs', got {protocol!r}")
    dataset = require_random_access(open_dataset(data, images, data_format), "eval")
    place = pick_device(device, local_rank=0)
    loaded = load_pretrained(model_dir, dtype=compute_dtype, device=place, vocab=vocab)
    model, tokenizer = loaded.model, loaded.require_tokenizer()
    encoded = encode_dataset(model, tokenizer, dataset, batch_size, num_workers, max_length, progress, fast_decode)
    if saved:
        with atomic_file(saved) as handle:
            np.savez(handle, text_embeds=encoded.text_feats, image_embeds=encoded.image_feats,
                     text_to_image=np.asarray(encoded.text_image), image_ids=np.asarray(encoded.image_ids))
    metrics = retrieval_metrics(encoded.text_feats, encoded.image_feats, encoded.text_image, protocol=protocol)
    skipped = [f"{where}: {why}" for where, why in getattr(dataset, "problems", [])]
    skipped += [f"{image}: {why}" for image, why in encoded.skipped]
    if skipped:
        metrics["skipped"] = skipped
    if out:
        atomic_write_bytes(out, (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))
    return Evaluation(metrics, protocol, len(encoded.text_image), len(encoded.image_ids),
                      None if out is None else str(out), saved, tuple(skipped))


def _classification(model_dir, data, split, batch_size, num_workers, dtype, device, vocab, max_length, out,
                    progress, images, save_embeddings, data_format):
    """``eval --task classification``: :func:`~ernievil2torch.apps.zero_shot_accuracy.zero_shot_accuracy`, its
    metrics written to ``out`` as JSON."""
    from ..zero_shot_accuracy import zero_shot_accuracy

    for flag, value in (("--images", images), ("--save_embeddings", save_embeddings), ("--data_format", data_format)):
        if value:
            raise InputError(f"{flag} applies to --task retrieval only")
    if out:
        check_output_file(out, inputs=[model_dir, data, vocab])
    result = zero_shot_accuracy(model_dir, data, split, batch_size, num_workers, dtype, device, vocab, max_length,
                                progress)
    if out:
        atomic_write_bytes(out, (json.dumps(result.metrics(), indent=2) + "\n").encode("utf-8"))
    return result
