"""The retrieval commands: ``search`` (top-k over embedding folders) and ``eval`` (zero-shot recall of a model)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ...constants import DEFAULT_MAX_LENGTH
from ...errors import InputError
from ...modeling.dtypes import torch_dtype
from ...pretrained import load_pretrained
from ...storage.atomic import atomic_file, atomic_write_bytes
from ...data.datasets import RetrievalData, load_caption_folder, load_coco_cn_tsv
from ...data.inputs import Item
from ...retrieval.metrics import as_float32_tensor, format_table, retrieval_metrics
from ...retrieval.topk import NormalizedRows, search_embeddings
from ...runtime.encoding import encode_items
from ..embed import load_embeddings


def _load_side(spec: str) -> Tuple[np.ndarray, List[str]]:
    """An ``embed`` output folder (memory-mapped embeddings, its ids) or a bare .npy (ids = row numbers)."""
    path = Path(spec)
    if path.is_dir():
        return load_embeddings(spec, mmap=True)
    array = np.load(path, mmap_mode="r")
    return array, [str(i) for i in range(array.shape[0])]


def search(queries: str, gallery: str, out: str, k: int = 10, chunk_size: int = 65536, normalize: bool = True,
           faiss: bool = False) -> str:
    """Top-k gallery items for every query; writes OUT as TSV: query_id, rank, gallery_id, score.

    Args:
        queries: an `embed` output folder (embeddings.npy + ids.txt) or a .npy file (ids = row numbers).
        gallery: the same for the gallery (read memory-mapped, scanned chunk by chunk).
        out: the TSV to write.
        k: results per query.
        chunk_size: gallery rows per block.
        normalize: L2-normalise queries (per block, also the gallery) so scores are cosines.
        faiss: use faiss.IndexFlatIP if installed.
    """
    q, q_ids = _load_side(queries)
    g, g_ids = _load_side(gallery)
    if normalize:
        q = F.normalize(as_float32_tensor(np.asarray(q)), dim=-1).numpy()
        g = NormalizedRows(g)
    scores, ids = search_embeddings(q, g, k=k, chunk_size=chunk_size, use_faiss=faiss)
    with atomic_file(out, "w", encoding="utf-8") as handle:
        for row in range(scores.shape[0]):
            for rank in range(scores.shape[1]):
                handle.write(f"{q_ids[row]}\t{rank + 1}\t{g_ids[ids[row, rank]]}\t{scores[row, rank]:.6f}\n")
    return out


def encode_dataset(model, tokenizer, data: RetrievalData, batch_size: int = 64, num_workers: int = 0,
                   max_length: int = DEFAULT_MAX_LENGTH, progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Raw (not normalised) text and image features of a dataset; any unreadable image is an error."""
    image_items = [Item(i, src) for i, src in zip(data.image_ids, data.images)]
    image_feats, ok, failed = encode_items(model, image_items, "image", batch_size, num_workers,
                                           progress=progress)
    if failed:
        shown = "; ".join(f"{data.image_ids[i]}: {r}" for i, r in failed[:5])
        raise InputError(f"{len(failed)} image(s) could not be read: {shown}")
    text_items = [Item(str(t), text) for t, text in enumerate(data.texts)]
    text_feats, ok_t, failed_t = encode_items(model, text_items, "text", batch_size, num_workers, tokenizer,
                                              max_length, progress=progress)
    if failed_t:
        shown = "; ".join(f"caption {i}: {r}" for i, r in failed_t[:5])
        raise InputError(f"{len(failed_t)} caption(s) could not be tokenised: {shown}")
    return text_feats, image_feats


def evaluate(model_dir: str, data: str, images: Optional[str] = None, protocol: str = "grouped",
             batch_size: int = 64, num_workers: int = 2, dtype: str = "float32", device: Optional[str] = None,
             vocab: Optional[str] = None, max_length: int = DEFAULT_MAX_LENGTH, out: Optional[str] = None,
             save_embeddings: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Zero-shot image-text retrieval: R@1/5/10 both ways and mean recall, ranked by raw cosine (official eval).

    Args:
        model_dir: a converted model directory (with vocab.txt, or pass --vocab).
        data: the official COCO-CN style TSV (text<TAB>image_id<TAB>base64 per line), or with --images a
            captions file (.jsonl or .tsv, see load_caption_folder).
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
    """
    dataset = load_caption_folder(images, data) if images else load_coco_cn_tsv(data)
    compute_dtype = torch_dtype(dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_pretrained(model_dir, dtype=compute_dtype, device=device, vocab=vocab)
    model, tokenizer = loaded.model, loaded.require_tokenizer()
    text_feats, image_feats = encode_dataset(model, tokenizer, dataset, batch_size, num_workers, max_length,
                                             progress)
    if save_embeddings:
        suffixed = save_embeddings if str(save_embeddings).endswith(".npz") else f"{save_embeddings}.npz"
        with atomic_file(suffixed) as handle:  # np.savez's own naming: ".npz" appended when missing
            np.savez(handle, text_embeds=text_feats, image_embeds=image_feats,
                     text_to_image=np.asarray(dataset.text_image), image_ids=np.asarray(dataset.image_ids))
    metrics = retrieval_metrics(text_feats, image_feats, dataset.text_image, protocol=protocol)
    print(f"{metrics['num_texts']} captions, {len(dataset.images)} images, protocol {protocol}")
    print(format_table(metrics))
    print(f"MR (mean of the six recalls): {metrics['mean_recall']:.2f}")
    if out:
        atomic_write_bytes(out, (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))
    return metrics
