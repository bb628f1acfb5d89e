"""webdataset shards in the img2dataset layout: ``00000.tar``, ``00001.tar``, ... each holding ``KEY.jpg`` (or
another image extension) + ``KEY.txt`` (the caption) + ``KEY.json`` (metadata, not read), maybe a ``.parquet``
and ``_stats.json`` beside each shard (ignored).

Read with the standard library's :mod:`tarfile`, not the ``webdataset`` package: opening a dataset scans each tar's
headers once (tarfile seeks past the data; no image byte is read) and keeps, per sample, the shard, the image
member's offset and size, and the caption. An image is then read when a batch needs it, by seeking to its
offset, so the reader has random access: ``eval`` and ``finetune`` use it like any other format (one feature per
image, exact seeded order and resume), and ``embed`` makes one of its resumable shards per tar shard. webdataset's
pipelines read a tar front to back and split work by shard and by DataLoader worker on their own terms, which
cannot resume at a recorded sample nor give every process the same number of steps; what they would add
(URLs, pipes, shuffle buffers) this reader does not need for local shards.

Grouping follows webdataset's rule: a member's key is its path up to the first dot of its file name, and a sample
is the run of consecutive members with one key. A sample without an image or without a caption, a caption that
is not UTF-8, an image member whose data runs past the end of the file, and a tar that is damaged from some point
on (its later members cannot be found) are skipped and listed in :attr:`WebDatasetReader.problems`.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from .inputs import IMAGE_EXTENSIONS, Item
from .readers import IndexedCaptions

SHARD_SUFFIX = ".tar"
CAPTION_EXTENSION = "txt"
_IMAGE_EXTENSIONS = tuple(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def list_shards(data: Union[str, Path]) -> List[Path]:
    """The ``.tar`` shards of ``data``: a folder's, sorted by name (img2dataset numbers them), or one ``.tar``."""
    path = Path(data)
    if path.is_file() and path.suffix == SHARD_SUFFIX:
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == SHARD_SUFFIX and p.is_file())
    return []


def is_webdataset(data: Union[str, Path]) -> bool:
    """Whether ``data`` is a ``.tar`` shard or a folder holding at least one."""
    return bool(list_shards(data))


@dataclass(frozen=True)
class MemberBytes:
    """A tar member's data, read when called: ``size`` bytes at ``offset`` of ``path`` (small and picklable, so a
    list of them stands for a dataset's images without holding any; a DataLoader worker reads its own)."""

    path: str
    offset: int
    size: int
    name: str

    def __call__(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read {self.name} ({exc.strerror or exc})") from None
        if len(data) != self.size:
            raise InputError(f"{self.path}: {self.name} is cut off (the shard changed since it was opened)")
        return data


def _split_key(name: str) -> Tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


class WebDatasetReader(IndexedCaptions):
    """``WebDatasetReader(data)``: the samples of every shard of ``data`` (a folder of ``.tar`` shards or one
    ``.tar``), in shard order, then member order. Caption ``t`` is sample ``t``; every sample is its own image
    (``image_ids[t]`` is its key, as ``KEY.jpg`` would be in an image folder).

    :attr:`shard_bounds` gives each shard's ``[start, stop)`` range of samples, :attr:`problems` every
    ``(where, reason)`` skipped. Raises :class:`InputError` for a path with no shards or when no sample at all is
    usable (naming the first problems).
    """

    format = "webdataset"
    #: ``eval`` leaves out an image that cannot be decoded (with its captions) and lists it, instead of stopping.
    skips_damaged = True

    def __init__(self, data: Union[str, Path]) -> None:
        super().__init__()
        self.root = Path(data)
        self.shards = list_shards(self.root)
        if not self.shards:
            raise InputError(f"{data}: no webdataset shards (.tar files) found")
        self.problems: List[Tuple[str, str]] = []
        self.problem_shard: List[int] = []  # the shard of each problem
        self.shard_bounds: List[Tuple[int, int]] = []
        shard_of: List[int] = []
        offsets: List[int] = []
        sizes: List[int] = []
        for number, shard in enumerate(self.shards):
            start, known = len(self.texts), len(self.problems)
            for key, offset, size, text in self._scan(shard):
                self._add_caption(text, (number, key), key, lambda: None)
                shard_of.append(number)
                offsets.append(offset)
                sizes.append(size)
            self.shard_bounds.append((start, len(self.texts)))
            self.problem_shard += [number] * (len(self.problems) - known)
        self._shard_of = np.asarray(shard_of, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        if not self.texts:
            shown = "; ".join(f"{where}: {why}" for where, why in self.problems[:3])
            raise InputError(f"{data}: no usable sample in {len(self.shards)} shard(s)" + (f" ({shown})" if shown
                                                                                            else ""))
        self._finish_index(str(data))

    def _scan(self, shard: Path):
        """``(key, image offset, image size, caption)`` of every usable sample of ``shard``, in member order."""
        file_size = shard.stat().st_size
        current: Optional[str] = None
        members: Dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                handle = tar.fileobj
                while True:
                    try:
                        info = tar.next()
                    except (tarfile.ReadError, EOFError, OSError) as exc:
                        self.problems.append((shard.name, f"damaged after byte {tar.offset}: the rest of the "
                                              f"shard is skipped ({type(exc).__name__}: {exc})"))
                        break
                    if info is None:  # the end, or a header tarfile silently stops at: the rest must be zeros
                        handle.seek(tar.offset)
                        rest = handle.read(tarfile.BLOCKSIZE)
                        if rest.strip(b"\0"):
                            self.problems.append((shard.name, f"damaged after byte {tar.offset}: the rest of the "
                                                  "shard is skipped (a member header that is not valid)"))
                        break
                    if not info.isfile():
                        continue
                    key, ext = _split_key(info.name)
                    if key != current:
                        if current is not None:
                            yield from self._sample(shard, handle, file_size, current, members)
                        current, members = key, {}
                    members[ext] = info
                if current is not None:
                    yield from self._sample(shard, handle, file_size, current, members)
        except (tarfile.ReadError, OSError) as exc:
            self.problems.append((shard.name, f"not a readable tar file ({type(exc).__name__}: {exc})"))

    def _sample(self, shard: Path, handle, file_size: int, key: str, members: Dict[str, tarfile.TarInfo]):
        where = f"{shard.name}:{key}"
        image = next((members[ext] for ext in _IMAGE_EXTENSIONS if ext in members), None)
        caption = members.get(CAPTION_EXTENSION)
        if image is None or caption is None:
            self.problems.append((where, "no image member" if image is None else "no .txt caption member"))
            return
        for info in (image, caption):
            if info.offset_data + info.size > file_size:
                self.problems.append((where, f"member {info.name} is cut off (the tar ends inside its data)"))
                return
        handle.seek(caption.offset_data)
        try:
            text = handle.read(caption.size).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            self.problems.append((where, f"caption is not UTF-8 ({exc.reason})"))
            return
        yield key, image.offset_data, image.size, text

    def member(self, number: int) -> MemberBytes:
        """Image ``number``'s tar member, not read yet."""
        return MemberBytes(str(self.shards[int(self._shard_of[number])]), int(self._offsets[number]),
                           int(self._sizes[number]), self.image_ids[number])

    def image(self, number: int) -> bytes:
        """The encoded bytes of image ``number``, read from its shard now."""
        return self.member(number)()

    def shard_of(self, number: int) -> int:
        """The shard (its place in :attr:`shards`) holding sample ``number``."""
        return int(self._shard_of[number])

    def problem_lines(self) -> List[str]:
        """One ``where: reason`` line per skipped sample or damaged shard."""
        return [f"{where}: {why}" for where, why in self.problems]



def shard_items(reader: WebDatasetReader, kind: str) -> Tuple[List[Item], List[Tuple[int, int]]]:
    """``embed``'s items of a webdataset and its shards, one per ``.tar``: for ``kind == "image"`` one item per
    sample (id = key, source = its :class:`MemberBytes`, read when its batch is decoded), for ``"text"`` its
    caption; after each shard's samples, one failed item per problem found in that shard (id = where, so
    ``failed.tsv`` lists it). Returns the items and each shard's ``[start, stop)`` range of them."""
    items: List[Item] = []
    bounds: List[Tuple[int, int]] = []
    for number, (start, stop) in enumerate(reader.shard_bounds):
        first = len(items)
        for sample in range(start, stop):
            source: object = reader.member(sample) if kind == "image" else reader.texts[sample]
            items.append(Item(reader.image_ids[sample], source))
        items += [Item(where, None, why) for (where, why), shard in zip(reader.problems, reader.problem_shard)
                  if shard == number]
        bounds.append((first, len(items)))
    return items, bounds

