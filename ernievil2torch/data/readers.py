"""The reader protocol for caption-image datasets, and the base of the readers that keep random access.

A dataset is a list of captions, each linked to one image; an image may have several captions. Every format is one
reader (:mod:`.coco_cn`, :mod:`.caption_folder`); :func:`~ernievil2torch.data.formats.open_dataset` picks it.

* :class:`CaptionReader` is what every reader does: hand out :class:`CaptionSample` s epoch by epoch from a
  :class:`~ernievil2torch.data.stream.StreamPosition` (see :mod:`.stream` for what a position means), so a run
  that recorded the position of the next sample continues exactly. A sharded format that can only read forward
  implements this protocol alone (``random_access = False``).
* :class:`IndexedCaptions` is the base of the formats that can reach any sample by number (``eval`` and ``finetune``
  need that: the exact seeded permutation sampler, exact resume, one feature per distinct image). It holds only the
  captions, the caption -> image links and the image ids; an image's source (a path, or encoded bytes read from the
  file when asked for) comes from :meth:`IndexedCaptions.image`, so memory does not grow with the images' size.

Readers are picklable: a DataLoader worker process gets a copy that reopens its file on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Any, Callable, Dict, Hashable, Iterator, List, Optional, Protocol, Sequence, Tuple, Union,
                    overload, runtime_checkable)

from ..errors import InputError
from .inputs import Item
from .stream import StreamPosition, epoch_order

#: What :meth:`IndexedCaptions.image` returns: a file path, or the encoded image bytes (JPEG, PNG, ...).
ImageSource = Union[str, bytes]


@dataclass(frozen=True)
class CaptionSample:
    """One caption with its image. ``position`` is where this sample stands in the stream: restarting the stream
    from ``position.advanced(1)`` continues after it. ``caption``/``image`` are the dataset's numbers for the
    caption and the image (-1 where a streaming format does not number them)."""

    position: StreamPosition
    text: str
    image_id: str
    source: ImageSource
    caption: int = -1
    image: int = -1


@runtime_checkable
class CaptionReader(Protocol):
    """A caption-image dataset in one format.

    ``format`` is the reader's name in :data:`~ernievil2torch.data.formats.DATASET_FORMATS`; ``random_access`` says
    whether it is also an :class:`IndexedCaptions` (numbered captions and images).

    ``stream(position, seed)`` yields the samples of epoch ``position.epoch`` that come at or after ``position`` in
    that epoch's order, each carrying its own position; ``seed`` fixes the order (None: the reader's natural order),
    and the same seed and epoch give the same order in every process. The contract a checkpoint relies on: for any
    sample ``s`` of a stream, ``stream(s.position.advanced(1), seed)`` yields exactly the samples that followed
    ``s``, also in another process (a reader unpickled, or opened again on the same files). A position the reader
    cannot start from (a shard it does not have, an index past the end) is an :class:`InputError`.

    A sharded streaming format (webdataset ``.tar`` shards) implements this with ``random_access = False``: the
    epoch's order is a seeded order of shards, ``position.shard`` the place in it, ``position.index`` the samples
    already taken from that shard; processes of a distributed run read disjoint shards, each with its own
    position. It is one more row in ``DATASET_FORMATS``; nothing above the factory changes.
    """

    format: str
    random_access: bool

    def stream(self, position: StreamPosition = StreamPosition(), seed: Optional[int] = None
               ) -> Iterator[CaptionSample]: ...


class ImageSources(Sequence):
    """``images[j]`` is the source of image ``j`` (read when indexed, never kept)."""

    def __init__(self, reader: "IndexedCaptions") -> None:
        self.reader = reader

    def __len__(self) -> int:
        return self.reader.num_images

    @overload
    def __getitem__(self, number: int) -> ImageSource: ...
    @overload
    def __getitem__(self, number: slice) -> List[ImageSource]: ...

    def __getitem__(self, number):
        if isinstance(number, slice):
            return [self.reader.image(j) for j in range(*number.indices(len(self)))]
        return self.reader.image(number)


class ImageItems(Sequence):
    """The images as ``embed``-style :class:`~ernievil2torch.data.inputs.Item` s for batch encoding: ``items[j]``
    reads image ``j``'s source when indexed (in whichever process indexes it); a source that cannot be read
    becomes an item carrying the reason instead of an exception, so it fails alone."""

    def __init__(self, reader: "IndexedCaptions") -> None:
        self.reader = reader

    def __len__(self) -> int:
        return self.reader.num_images

    def __getitem__(self, number):
        if isinstance(number, slice):
            return [self[j] for j in range(*number.indices(len(self)))]
        image_id = self.reader.image_ids[number]
        try:
            return Item(image_id, self.reader.image(number))
        except Exception as exc:  # a file changed or vanished since it was indexed: this image fails alone
            return Item(image_id, None, f"{type(exc).__name__}: {exc}")


class IndexedCaptions:
    """Base of the readers with random access: ``texts[t]`` is caption ``t``, ``text_image[t]`` the number of its
    image, ``image_ids[j]`` image ``j``'s id, :meth:`image` its source. Images are numbered in first-mention order.

    A subclass fills the index with :meth:`_add_caption` while it reads its captions, calls :meth:`_finish_index`,
    and implements :meth:`image`. ``len(reader)`` is the number of captions (one sample per caption).
    """

    format = ""
    random_access = True

    def __init__(self) -> None:
        self.texts: List[str] = []
        self.text_image: List[int] = []
        self.image_ids: List[str] = []
        self._image_keys: Dict[Hashable, int] = {}

    # -- building the index ------------------------------------------------------------------------------------
    def _add_caption(self, text: str, key: Hashable, image_id: str, on_new_image: Callable[[], Any]) -> bool:
        """Link caption ``text`` to the image identified by ``key``; the first caption of a new key numbers the
        image and calls ``on_new_image()`` (where the subclass records how to read it). True for a new image."""
        new = key not in self._image_keys
        if new:
            on_new_image()
            self._image_keys[key] = len(self.image_ids)
            self.image_ids.append(image_id)
        self.texts.append(text)
        self.text_image.append(self._image_keys[key])
        return new

    def _finish_index(self, where: str) -> None:
        """Drop the keys (only needed while reading); :class:`InputError` if no caption was read."""
        self._image_keys = {}
        if not self.texts:
            raise InputError(f"{where}: no captions")

    # -- random access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def image(self, number: int) -> ImageSource:
        """The source of image ``number``: a path or the encoded bytes (read now; :class:`InputError` if it can no
        longer be read as indexed)."""
        raise NotImplementedError

    @property
    def images(self) -> ImageSources:
        """Every image's source, read on indexing: ``reader.images[j] == reader.image(j)``."""
        return ImageSources(self)

    def image_items(self) -> ImageItems:
        """The images as lazily read items (id = image id), for
        :func:`~ernievil2torch.runtime.encoding.encode_items`."""
        return ImageItems(self)

    def caption_items(self) -> List[Item]:
        """The captions as items (id = caption number)."""
        return [Item(str(number), text) for number, text in enumerate(self.texts)]

    def missing_images(self) -> List[Tuple[int, str]]:
        """``(image number, path)`` of every image file that does not exist (none for formats holding the bytes)."""
        return []

    def sample(self, caption: int, position: StreamPosition = StreamPosition()) -> CaptionSample:
        """Caption ``caption`` with its image's source."""
        image = self.text_image[caption]
        return CaptionSample(position, self.texts[caption], self.image_ids[image], self.image(image), caption, image)

    def stream(self, position: StreamPosition = StreamPosition(), seed: Optional[int] = None
               ) -> Iterator[CaptionSample]:
        """The captions of epoch ``position.epoch`` in :func:`~ernievil2torch.data.stream.epoch_order` (file order
        without a seed), from index ``position.index`` of that order to its end. ``position.shard`` must be 0 (one
        shard: the whole file); an index past the number of captions is an :class:`InputError`."""
        if position.shard != 0:
            raise InputError(f"{self.format}: one shard only, cannot start at shard {position.shard}")
        if position.index > len(self):
            raise InputError(f"{self.format}: position {position.index} is past the {len(self)} captions")
        order = epoch_order(len(self), seed, position.epoch)
        for index in range(position.index, len(order)):
            yield self.sample(int(order[index]), StreamPosition(position.epoch, index))
