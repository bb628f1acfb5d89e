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
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from .inputs import IMAGE_EXTENSIONS, Item
from .readers import IndexedCaptions

SHARD_SUFFIX = ".tar"
CAPTION_EXTENSION = "txt"
_IMAGE_EXTENSIONS = tuple(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def _shard_order(path: Path) -> Tuple[int, Union[int, str]]:
    """Numbered shards in number order (CLIP_benchmark's ``0.tar`` ... ``10.tar``), others by name after them."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.name)


def list_shards(data: Union[str, Path]) -> List[Path]:
    """The ``.tar`` shards of ``data``: a folder's, in number order (img2dataset's ``00000.tar`` ..., CLIP_benchmark's
    ``0.tar`` ...), or one ``.tar``."""
    path = Path(data)
    if path.is_file() and path.suffix == SHARD_SUFFIX:
        return [path]
    if path.is_dir():
        return sorted((p for p in path.iterdir() if p.suffix == SHARD_SUFFIX and p.is_file()), key=_shard_order)
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


def scan_shard(shard: Path, problems: List[Tuple[str, str]]) -> Iterator[Tuple[str, Dict[str, tarfile.TarInfo], BinaryIO]]:
    """``(key, {extension: member}, open file)`` of every sample of ``shard`` in member order, each member's data
    checked to lie inside the file; a damaged sample or the damaged rest of the shard is appended to ``problems``
    as ``(where, reason)``. The file is open while the caller handles a sample (to read small members)."""
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
                    problems.append((shard.name, f"damaged after byte {tar.offset}: the rest of the shard is "
                                     f"skipped ({type(exc).__name__}: {exc})"))
                    break
                if info is None:  # the end, or a header tarfile silently stops at: the rest must be zeros
                    handle.seek(tar.offset)
                    if handle.read(tarfile.BLOCKSIZE).strip(b"\0"):
                        problems.append((shard.name, f"damaged after byte {tar.offset}: the rest of the shard is "
                                         "skipped (a member header that is not valid)"))
                    break
                if not info.isfile():
                    continue
                key, ext = _split_key(info.name)
                if key != current:
                    if current is not None and _complete(shard, current, members, file_size, problems):
                        yield current, members, handle
                    current, members = key, {}
                members[ext] = info
            if current is not None and _complete(shard, current, members, file_size, problems):
                yield current, members, handle
    except (tarfile.ReadError, OSError) as exc:
        problems.append((shard.name, f"not a readable tar file ({type(exc).__name__}: {exc})"))


def _complete(shard: Path, key: str, members: Dict[str, tarfile.TarInfo], file_size: int,
              problems: List[Tuple[str, str]]) -> bool:
    for info in members.values():
        if info.offset_data + info.size > file_size:
            problems.append((f"{shard.name}:{key}", f"member {info.name} is cut off (the tar ends inside its data)"))
            return False
    return True


def image_member(members: Dict[str, tarfile.TarInfo]) -> Optional[tarfile.TarInfo]:
    """The sample's image member (the first image extension found), or None."""
    return next((members[ext] for ext in _IMAGE_EXTENSIONS if ext in members), None)


def read_text_member(handle: BinaryIO, info: tarfile.TarInfo) -> str:
    """A small member's data as UTF-8 text (``UnicodeDecodeError`` if it is not)."""
    handle.seek(info.offset_data)
    return handle.read(info.size).decode("utf-8")


class WebDatasetReader(IndexedCaptions):
    """``WebDatasetReader(data)``: the samples of every shard of ``data`` (a folder of ``.tar`` shards or one
    ``.tar``), in shard order, then member order. Every sample is one image (``image_ids[j]`` is its key, as
    ``KEY.jpg`` would be in an image folder); each non-empty line of its ``.txt`` is one caption (img2dataset
    writes one; CLIP_benchmark's retrieval sets write several).

    :attr:`shard_bounds` gives each shard's ``[start, stop)`` range of images, :attr:`problems` every
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
            start, known = self.num_images, len(self.problems)
            for key, members, handle in scan_shard(shard, self.problems):
                captions = self._captions(shard, key, members, handle)
                if not captions:
                    continue
                image = image_member(members)
                for text in captions:
                    self._add_caption(text, (number, key), key, lambda: None)
                shard_of.append(number)
                offsets.append(image.offset_data)
                sizes.append(image.size)
            self.shard_bounds.append((start, self.num_images))
            self.problem_shard += [number] * (len(self.problems) - known)
        self._shard_of = np.asarray(shard_of, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        if not self.texts:
            shown = "; ".join(f"{where}: {why}" for where, why in self.problems[:3])
            raise InputError(f"{data}: no usable sample in {len(self.shards)} shard(s)" + (f" ({shown})" if shown
                                                                                            else ""))
        self._finish_index(str(data))

    def _captions(self, shard: Path, key: str, members: Dict[str, tarfile.TarInfo], handle: BinaryIO) -> List[str]:
        where = f"{shard.name}:{key}"
        caption = members.get(CAPTION_EXTENSION)
        if image_member(members) is None or caption is None:
            self.problems.append((where, "no image member" if image_member(members) is None
                                  else "no .txt caption member"))
            return []
        try:
            lines = [line.strip() for line in read_text_member(handle, caption).splitlines()]
        except UnicodeDecodeError as exc:
            self.problems.append((where, f"caption is not UTF-8 ({exc.reason})"))
            return []
        if not any(lines):
            self.problems.append((where, "empty caption"))
        return [line for line in lines if line]

    def member(self, number: int) -> MemberBytes:
        """Image ``number``'s tar member, not read yet."""
        return MemberBytes(str(self.shards[int(self._shard_of[number])]), int(self._offsets[number]),
                           int(self._sizes[number]), self.image_ids[number])

    def image(self, number: int) -> bytes:
        """The encoded bytes of image ``number``, read from its shard now."""
        return self.member(number)()

    def shard_of(self, number: int) -> int:
        """The shard (its place in :attr:`shards`) holding image ``number``."""
        return int(self._shard_of[number])

    def problem_lines(self) -> List[str]:
        """One ``where: reason`` line per skipped sample or damaged shard."""
        return [f"{where}: {why}" for where, why in self.problems]


def shard_items(reader: WebDatasetReader, kind: str) -> Tuple[List[Item], List[Tuple[int, int]]]:
    """``embed``'s items of a webdataset and its shards, one per ``.tar``: for ``kind == "image"`` one item per
    sample (id = key, source = its :class:`MemberBytes`, read when its batch is decoded), for ``"text"`` one per
    caption (id = key, or ``KEY#n`` for the n-th of several captions); after each shard's samples, one failed item
    per problem found in that shard (id = where, so ``failed.tsv`` lists it). Returns the items and each shard's
    ``[start, stop)`` range of them."""
    items: List[Item] = []
    bounds: List[Tuple[int, int]] = []
    captions: List[List[int]] = [[] for _ in range(reader.num_images)]
    for caption, image in enumerate(reader.text_image):
        captions[image].append(caption)
    for number, (start, stop) in enumerate(reader.shard_bounds):
        first = len(items)
        for image in range(start, stop):
            key = reader.image_ids[image]
            if kind == "image":
                items.append(Item(key, reader.member(image)))
                continue
            several = len(captions[image]) > 1
            items += [Item(f"{key}#{n}" if several else key, reader.texts[t]) for n, t in enumerate(captions[image])]
        items += [Item(where, None, why) for (where, why), shard in zip(reader.problems, reader.problem_shard)
                  if shard == number]
        bounds.append((first, len(items)))
    return items, bounds



CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
LABEL_EXTENSION = "cls"


@dataclass
class LabelledImages:
    """A zero-shot classification set in CLIP_benchmark's ``wds/`` layout: ``classnames`` (line ``i`` names class
    ``i``), ``templates`` (each with ``{c}`` where the class name goes), and one item per image (id = key, source =
    its :class:`MemberBytes`) with its class number in ``labels``; ``problems`` lists what was skipped."""

    root: Path
    classnames: List[str]
    templates: List[str]
    items: List[Item]
    labels: List[int]
    problems: List[Tuple[str, str]]


def _lines(path: Path) -> List[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (a zero-shot classification set needs it)")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def open_labelled_images(root: Union[str, Path], split: str = "test") -> LabelledImages:
    """Read ``ROOT/classnames.txt``, ``ROOT/zeroshot_classification_templates.txt`` and the shards of
    ``ROOT/SPLIT/`` (``KEY.png``/``.jpg``/``.webp`` + ``KEY.cls``, the class number as text), as CLIP_benchmark's
    ``build_wds_dataset`` does. A sample without image or label, or with a label that is not a class number, is
    skipped and listed. :class:`InputError` for missing files, a template without ``{c}``, or no usable sample."""
    root = Path(root)
    classnames = _lines(root / CLASSNAMES_FILE)
    templates = _lines(root / TEMPLATES_FILE)
    for template in templates:
        if "{c}" not in template:
            raise InputError(f"{root / TEMPLATES_FILE}: template {template!r} has no '{{c}}' for the class name")
    shards = list_shards(root / split)
    if not shards:
        raise InputError(f"{root / split}: no webdataset shards (.tar files) found")
    items: List[Item] = []
    labels: List[int] = []
    problems: List[Tuple[str, str]] = []
    for shard in shards:
        for key, members, handle in scan_shard(shard, problems):
            image, label = image_member(members), members.get(LABEL_EXTENSION)
            where = f"{shard.name}:{key}"
            if image is None or label is None:
                problems.append((where, "no image member" if image is None else "no .cls label member"))
                continue
            try:
                number = int(read_text_member(handle, label).strip())
            except (UnicodeDecodeError, ValueError):
                number = -1
            if not 0 <= number < len(classnames):
                problems.append((where, f"label is not a class number 0..{len(classnames) - 1}"))
                continue
            items.append(Item(key, MemberBytes(str(shard), image.offset_data, image.size, key)))
            labels.append(number)
    if not items:
        raise InputError(f"{root / split}: no usable labelled image" + (f" ({problems[0][0]}: {problems[0][1]})"
                                                                        if problems else ""))
    return LabelledImages(root, classnames, templates, items, labels, problems)
