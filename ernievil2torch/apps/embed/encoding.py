"""Encoding items in batches: DataLoader workers decode images or tokenise texts, the model encodes them.

A bad item (unreadable image, text the tokenizer refuses) fails alone: it is returned with its reason and the rest
of its batch is encoded. Each text is tokenised once.
"""
from __future__ import annotations

import sys
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...constants import DEFAULT_MAX_LENGTH
from ...processing import ErnieViL2ImageProcessor, ErnieViL2Tokenizer
from .inputs import Item

#: One loader batch: input indices that succeeded, their model input (None if none did), (index, reason) failures.
Batch = Tuple[List[int], Any, List[Tuple[int, str]]]


class _ImageDataset(Dataset):
    """Decodes and preprocesses one image per index (in a worker); a failure becomes its reason."""

    def __init__(self, items: Sequence[Item], image_size: int, resample: str = "official") -> None:
        self.items, self.image_size, self.resample = items, image_size, resample
        self._processor: Optional[ErnieViL2ImageProcessor] = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if item.error:
            return index, None, item.error
        if self._processor is None:
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


class _StackImages:
    """Collate for images: stack the pixels that decoded, keep failures aside."""

    def __call__(self, batch) -> Batch:
        ok = [(i, x) for i, x, err in batch if err is None]
        failed = [(i, err) for i, x, err in batch if err is not None]
        indices = [i for i, _ in ok]
        return indices, (torch.stack([x for _, x in ok]) if ok else None), failed


class _TokenizeTexts:
    """Collate for texts: tokenise each text once (in the worker); a text the tokenizer refuses fails alone."""

    def __init__(self, tokenizer: ErnieViL2Tokenizer, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, batch) -> Batch:
        failed = [(i, err) for i, x, err in batch if err is not None]
        indices, encoded = [], []
        for i, text, err in batch:
            if err is not None:
                continue
            try:
                encoded.append(self.tokenizer.encode(text))
                indices.append(i)
            except Exception as exc:
                failed.append((i, f"{type(exc).__name__}: {exc}"))
        if not indices:
            return indices, None, failed
        enc = self.tokenizer.pad(encoded, max_length=self.max_length, padding="max_length", return_tensors="pt")
        return indices, (enc["input_ids"], enc["attention_mask"]), failed


class _ListBatchSampler(Sampler):
    def __init__(self, batches: List[List[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(items: Sequence[Item], kind: str, batches: List[List[int]], num_workers: int, model,
                tokenizer: Optional[ErnieViL2Tokenizer] = None, max_length: int = DEFAULT_MAX_LENGTH) -> DataLoader:
    """A DataLoader yielding :data:`Batch` es for the given index batches, in that order."""
    if kind == "image":
        dataset: Dataset = _ImageDataset(items, model.config.vision.image_size)
        collate: Any = _StackImages()
    else:
        dataset = _TextDataset(items)
        collate = _TokenizeTexts(tokenizer, max_length)
    return DataLoader(dataset, batch_sampler=_ListBatchSampler(batches), num_workers=num_workers,
                      collate_fn=collate, pin_memory=False)


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
                 normalize: bool = False, progress: bool = False
                 ) -> Tuple[np.ndarray, List[int], List[Tuple[int, str]]]:
    """Encode items in memory: (features of the successes [n_ok, dim] float32, their indices, failures)."""
    batches = [list(range(i, min(i + batch_size, len(items)))) for i in range(0, len(items), batch_size)]
    loader = make_loader(items, kind, batches, num_workers, model, tokenizer, max_length)
    feats, indices, failed = [], [], []
    bar = progress_bar(len(items), f"encode {kind}s", progress)
    for idx, inputs, bad in loader:
        failed.extend(bad)
        if idx:
            feats.append(run_batch(model, kind, inputs, normalize))
            indices.extend(idx)
        bar.update(len(idx) + len(bad))
    bar.close()
    array = np.concatenate(feats) if feats else np.zeros((0, feature_dim(model, kind)), np.float32)
    return array, indices, sorted(failed)


def progress_bar(total: int, desc: str, enabled: bool, position: int = 0, unit: str = "item"):
    """A tqdm bar on stderr (a stand-in that only prints :meth:`write` messages when tqdm is not installed)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, n=1): pass
            def set_postfix(self, **kwargs): pass
            def write(self, message): print(message, file=sys.stderr)
            def close(self): pass
        return _Null()
    return tqdm(total=total, desc=desc, disable=not enabled, position=position, unit=unit, dynamic_ncols=True,
                file=sys.stderr)
