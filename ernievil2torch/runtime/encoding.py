"""Encoding items in batches: DataLoader workers decode images while the model encodes the previous batch; texts
are grouped by token length (:class:`~ernievil2torch.processing.length_groups.LengthGroupedTexts`) so a batch is
padded only to its own longest text.

A bad item (unreadable image, text the tokenizer refuses) fails alone: it is returned with its reason and the rest
of its batch is encoded. Each text is tokenised once (in the main process, a group at a time: the tokenizer is
hundreds of times faster than the text tower). Batches never cross a group (an ``embed`` shard), so each group's
rows come back before the next group starts; within a group text batches run in length order, and callers put rows
back in input order by their indices.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..constants import DEFAULT_MAX_LENGTH
from ..processing import ErnieViL2ImageProcessor, ErnieViL2Tokenizer
from ..processing.length_groups import LengthGroupedTexts
from ..data.inputs import Item
from .progress import progress_bar

#: One loader batch: input indices that succeeded, their model input (None if none did), (index, reason) failures.
Batch = Tuple[List[int], Any, List[Tuple[int, str]]]


class _ImageDataset(Dataset):
    """Decodes and preprocesses one image per index (in a worker); a failure becomes its reason. ``fast_decode``:
    see :class:`~ernievil2torch.processing.ErnieViL2ImageProcessor`."""

    def __init__(self, items: Sequence[Item], image_size: int, fast_decode: bool = False) -> None:
        self.items, self.image_size, self.fast_decode = items, image_size, fast_decode
        self._processor: Optional[ErnieViL2ImageProcessor] = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if item.error:
            return index, None, item.error
        if self._processor is None:
            self._processor = ErnieViL2ImageProcessor(image_size=self.image_size, fast_decode=self.fast_decode)
        try:  # a callable source (a tar member) is read here, in the worker that decodes it
            source = item.source() if callable(item.source) else item.source
            return index, self._processor([source])[0], None
        except Exception as exc:  # one bad file must not stop the run
            return index, None, f"{type(exc).__name__}: {exc}"


class _StackImages:
    """Collate for images: stack the pixels that decoded, keep failures aside."""

    def __call__(self, batch) -> Batch:
        ok = [(i, x) for i, x, err in batch if err is None]
        failed = [(i, err) for i, x, err in batch if err is not None]
        indices = [i for i, _ in ok]
        return indices, (torch.stack([x for _, x in ok]) if ok else None), failed


class _ListBatchSampler(Sampler):
    def __init__(self, batches: List[List[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def image_loader(items: Sequence[Item], batches: List[List[int]], num_workers: int, image_size: int,
                 fast_decode: bool = False) -> DataLoader:
    """A DataLoader yielding :data:`Batch` es of decoded images for the given index batches, in that order."""
    return DataLoader(_ImageDataset(items, image_size, fast_decode), batch_sampler=_ListBatchSampler(batches),
                      num_workers=num_workers, collate_fn=_StackImages(), pin_memory=False)


def text_batches(items: Sequence[Item], indices: Sequence[int], tokenizer: ErnieViL2Tokenizer, batch_size: int,
                 max_length: int = DEFAULT_MAX_LENGTH) -> Iterator[Batch]:
    """Length-grouped :data:`Batch` es of the texts ``items[indices]`` (every index in exactly one batch or
    failure; the failures come with the first batch)."""
    failed = [(i, items[i].error) for i in indices if items[i].error]
    good = [i for i in indices if not items[i].error]
    groups = LengthGroupedTexts(tokenizer, [items[i].source for i in good], batch_size, max_length,
                                skip_failures=True) if good else None
    if groups is not None:
        failed += [(good[position], reason) for position, reason in groups.failed]
    if groups is None or len(groups) == 0:
        yield [], None, failed
        return
    for number, batch in enumerate(groups.batches()):
        yield ([good[p] for p in batch.positions], (batch.input_ids, batch.attention_mask),
               failed if number == 0 else [])


def group_batches(items: Sequence[Item], kind: str, groups: Sequence[Sequence[int]], batch_size: int,
                  num_workers: int, model, tokenizer: Optional[ErnieViL2Tokenizer] = None,
                  max_length: int = DEFAULT_MAX_LENGTH, fast_decode: bool = False) -> Iterator[Tuple[int, Batch]]:
    """``(group number, Batch)`` covering every index of every group, group after group; no batch crosses a group.
    Images: consecutive chunks of ``batch_size``, decoded in ``num_workers`` DataLoader workers (prefetching
    ahead of the model; JPEGs at a reduced DCT scale with ``fast_decode``). Texts: :func:`text_batches` per
    group."""
    if kind == "text":
        for number, indices in enumerate(groups):
            for batch in text_batches(items, indices, tokenizer, batch_size, max_length):
                yield number, batch
        return
    batches, owner = [], []
    for number, indices in enumerate(groups):
        indices = list(indices)
        for start in range(0, len(indices), batch_size):
            batches.append(indices[start:start + batch_size])
            owner.append(number)
    if batches:
        loader = image_loader(items, batches, num_workers, model.config.vision.image_size, fast_decode)
        yield from zip(owner, loader)


@torch.no_grad()
def run_batch(model, kind: str, inputs, normalize: bool) -> np.ndarray:
    """Features [n, dim] float32 of one loader batch's model input."""
    if kind == "image":
        feats = model.encode_image(inputs.to(model.device, model.dtype), normalize=normalize)
    else:
        feats = model.encode_text(inputs[0], inputs[1], normalize=normalize)
    return feats.float().cpu().numpy()


def feature_dim(model, kind: str) -> int:
    return model.config.text.hidden_size if kind == "text" else model.config.vision.hidden_size


def encode_items(model, items: Sequence[Item], kind: str, batch_size: int = 64, num_workers: int = 0,
                 tokenizer: Optional[ErnieViL2Tokenizer] = None, max_length: int = DEFAULT_MAX_LENGTH,
                 normalize: bool = False, progress: bool = False, fast_decode: bool = False
                 ) -> Tuple[np.ndarray, List[int], List[Tuple[int, str]]]:
    """Encode items in memory: (features of the successes [n_ok, dim] float32 in input order, their indices
    (ascending), failures (sorted))."""
    feats, indices, failed = [], [], []
    bar = progress_bar(len(items), f"encode {kind}s", progress)
    for _, (idx, inputs, bad) in group_batches(items, kind, [range(len(items))], batch_size, num_workers, model,
                                               tokenizer, max_length, fast_decode):
        failed.extend(bad)
        if idx:
            feats.append(run_batch(model, kind, inputs, normalize))
            indices.extend(idx)
        bar.update(len(idx) + len(bad))
    bar.close()
    if not feats:
        return np.zeros((0, feature_dim(model, kind)), np.float32), [], sorted(failed)
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    return np.concatenate(feats)[order], [indices[j] for j in order], sorted(failed)
