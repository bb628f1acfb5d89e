"""Training data: caption-image pairs in the formats ``eval`` reads, checked up front, served in a seeded order.

* :func:`load_pairs` opens a dataset through :func:`ernievil2torch.data.formats.open_dataset` (a COCO-CN style TSV
  or an image folder + captions file; images are read when a sample needs them) and checks, before any training,
  that it has rows and that every caption's image file exists.
* :class:`PairBatches` is the order: one seeded permutation per epoch
  (:func:`~ernievil2torch.data.stream.epoch_order`), cut into global batches of ``batch_size x world_size`` pairs (an
  incomplete last batch is dropped), each process taking its slice. It can start at any micro-batch, which is how
  ``--resume`` continues exactly; :meth:`PairBatches.position` names a micro-batch as the
  :class:`~ernievil2torch.data.stream.StreamPosition` of its first pair, and :meth:`PairBatches.micro_batch_at`
  turns such a position back.
* :class:`PairDataset` gives one pair per ``(epoch, index)`` key, with the augmentation seeded by the run seed and the
  key. An image that cannot be decoded mid-run is skipped: the next readable pair takes its place in the batch (so
  every process keeps the same batch size) and the skip is reported with the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.formats import open_dataset, require_random_access
from ..data.readers import IndexedCaptions
from ..data.stream import StreamPosition, epoch_order
from ..errors import InputError
from ..processing import ErnieViL2Tokenizer
from .augment import TrainAugmentation

Key = Tuple[int, int]  # (epoch, pair index)


def load_pairs(data: str, images: Optional[str] = None, role: str = "training",
               data_format: Optional[str] = None, images_flag: str = "--images") -> IndexedCaptions:
    """Open a dataset (``data_format`` as :func:`~ernievil2torch.data.formats.open_dataset` takes it) and check it
    is usable: :class:`InputError`, its message starting with ``"{role} data"``, for a missing, unreadable or empty
    file, a format without random access, or captions whose image file does not exist (the first 10 are listed).
    ``images_flag`` is the flag that gives ``images`` (``--val_images`` for validation): messages name it."""
    try:
        dataset = require_random_access(open_dataset(data, images, data_format), role)
    except InputError as exc:
        message = str(exc).replace("--images", images_flag)
        raise InputError(f"{role} data: {message}") from None
    missing = dataset.missing_images()
    if missing:
        shown = ", ".join(str(src) for _, src in missing[:10])
        raise InputError(f"{role} data {data}: {len(missing)} of {dataset.num_images} images not found "
                         f"(captions point at missing files): {shown}")
    return dataset


def sample_rng(seed: int, key: Key) -> np.random.Generator:
    """The generator of one sample's augmentation: a function of the run seed, the epoch and the pair only."""
    return np.random.default_rng([seed, key[0], key[1]])


@dataclass
class Batch:
    """A collated micro-batch: ``pixel_values`` [B,3,S,S], ``input_ids``/``attention_mask`` [B,L] (padded to the
    longest text), and ``skipped``: (image id, reason) of every unreadable image replaced in this batch."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.pixel_values.shape[0])


class PairDataset(Dataset):
    """``dataset[(epoch, index)]`` -> (augmented pixels [3,S,S], caption, skipped images)."""

    def __init__(self, data: IndexedCaptions, image_size: int, seed: int) -> None:
        self.data, self.seed = data, seed
        self.augment = TrainAugmentation(image_size)

    def __len__(self) -> int:
        return len(self.data.texts)

    def __getitem__(self, key: Key):
        epoch, index = key
        rng = sample_rng(self.seed, key)
        skipped: List[Tuple[str, str]] = []
        for offset in range(len(self)):
            pair = (index + offset) % len(self)
            image = self.data.text_image[pair]
            try:
                pixels = self.augment(self.data.image(image), rng)
            except Exception as exc:  # one unreadable image must not stop the run
                skipped.append((self.data.image_ids[image], f"{type(exc).__name__}: {exc}"))
                continue
            return pixels, self.data.texts[pair], skipped
        raise InputError(f"none of the {self.data.num_images} training images can be read "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})")


class CollatePairs:
    """Stack the pixels, tokenise the captions (``[CLS] .. [SEP]``, at most ``max_length``, padded to the longest
    in the batch), gather the skip reports."""

    def __init__(self, tokenizer: ErnieViL2Tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, samples: Sequence[tuple]) -> Batch:
        encoded = self.tokenizer([text for _, text, _ in samples], max_length=self.max_length, padding="longest",
                                 return_tensors="pt")
        skipped = [item for _, _, reports in samples for item in reports]
        return Batch(torch.stack([pixels for pixels, _, _ in samples]), encoded["input_ids"],
                     encoded["attention_mask"], skipped)


class PairBatches(Sampler):
    """Micro-batches of keys for one process: epoch ``e`` permutes the pairs with ``default_rng([seed, e])`` and
    cuts global batches of ``batch_size * world_size``; process ``rank`` takes rows ``[rank*B, (rank+1)*B)`` of
    each. Iteration starts at micro-batch ``start`` (counted from epoch 0) and yields ``count`` of them."""

    def __init__(self, num_pairs: int, batch_size: int, world_size: int, rank: int, seed: int, start: int,
                 count: int) -> None:
        self.num_pairs, self.batch_size, self.world_size, self.rank = num_pairs, batch_size, world_size, rank
        self.seed, self.start, self.count = seed, start, count
        self.per_epoch = num_pairs // (batch_size * world_size)
        if self.per_epoch < 1:
            raise InputError(f"{num_pairs} training pairs do not fill one batch of {batch_size} x {world_size} "
                             "process(es): lower --batch_size")

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[List[Key]]:
        global_size = self.batch_size * self.world_size
        epoch, order = -1, np.empty(0, dtype=np.int64)
        for position in range(self.start, self.start + self.count):
            if position // self.per_epoch != epoch:
                epoch = position // self.per_epoch
                order = epoch_order(self.num_pairs, self.seed, epoch)
            first = (position % self.per_epoch) * global_size + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in order[first:first + self.batch_size]]

    def position(self, micro_batch: int) -> StreamPosition:
        """Where micro-batch ``micro_batch`` (counted from epoch 0) starts in the pairs' stream: its epoch and the
        index, in that epoch's seeded order, of the first pair of its global batch (the same for every rank)."""
        if micro_batch < 0:
            raise InputError(f"micro-batch must be >= 0, got {micro_batch}")
        epoch, within = divmod(micro_batch, self.per_epoch)
        return StreamPosition(epoch, within * self.batch_size * self.world_size)

    def micro_batch_at(self, position: StreamPosition) -> int:
        """The micro-batch that starts at ``position`` (the inverse of :meth:`position`); :class:`InputError` for a
        position that is not the start of a global batch of this run's batch size and world size, or that lies
        in the dropped remainder of an epoch."""
        global_size = self.batch_size * self.world_size
        within, rest = divmod(position.index, global_size)
        if position.shard != 0 or rest or within >= self.per_epoch:
            raise InputError(f"{position} is not the start of a batch of {self.batch_size} x {self.world_size} "
                             f"pair(s) over {self.num_pairs} pairs")
        return position.epoch * self.per_epoch + within
