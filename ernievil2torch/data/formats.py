"""The dataset formats, in one table, and the one factory that opens a dataset in any of them.

:data:`DATASET_FORMATS` maps a format name to its reader and a one-line description (what ``--help`` and the
README show). :func:`open_dataset` picks the format from what the arguments hold, or takes the name it is given:

* an image folder given (``images``), or DATA a ``.jsonl`` file: ``caption_folder`` (DATA is the captions file);
* DATA a ``.tar`` file or a folder of them: ``webdataset`` (img2dataset's shards);
* otherwise: ``coco_cn_tsv`` (DATA holds the images).

A new format is one reader (a :class:`~ernievil2torch.data.readers.CaptionReader`) and one row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from ..errors import InputError
from .caption_folder import CaptionFolderReader
from .coco_cn import CocoCnTsvReader
from .readers import CaptionReader, IndexedCaptions
from .webdataset import WebDatasetReader, is_webdataset


@dataclass(frozen=True)
class DatasetFormat:
    """One format: ``open(data, images)`` reads it; ``needs_images`` says whether it takes an image folder."""

    name: str
    description: str
    needs_images: bool
    open: Callable[[str, Optional[str]], CaptionReader]


DATASET_FORMATS: Dict[str, DatasetFormat] = {fmt.name: fmt for fmt in (
    DatasetFormat("coco_cn_tsv", "one 'text<TAB>image_id<TAB>base64 image' line per caption (the official "
                  "COCO-CN test file)", False, lambda data, images: CocoCnTsvReader(data)),
    DatasetFormat("caption_folder", "an image folder (--images) and a captions file: .jsonl "
                  "({\"image\", \"caption\"|\"captions\"}) or .tsv (caption<TAB>image)", True,
                  lambda data, images: CaptionFolderReader(images, data)),
    DatasetFormat("webdataset", "a folder of webdataset .tar shards in img2dataset's layout (KEY.jpg + KEY.txt "
                  "caption per sample) or one .tar; damaged samples are skipped and listed", False,
                  lambda data, images: WebDatasetReader(data)),
)}


def describe_formats() -> str:
    """One line per format: ``name: description``."""
    return "\n".join(f"{fmt.name}: {fmt.description}" for fmt in DATASET_FORMATS.values())


def detect_format(data: Union[str, Path], images: Optional[Union[str, Path]] = None) -> str:
    """The format :func:`open_dataset` picks when not told: ``caption_folder`` with an image folder or for a
    ``.jsonl`` file (a captions file, which holds no images), ``webdataset`` for a ``.tar`` or a folder of them,
    else ``coco_cn_tsv``."""
    if images or Path(data).suffix.lower() == ".jsonl":
        return "caption_folder"
    return "webdataset" if is_webdataset(data) else "coco_cn_tsv"


def open_dataset(data: Union[str, Path], images: Optional[Union[str, Path]] = None,
                 format: Optional[str] = None) -> CaptionReader:
    """Open the dataset at ``data`` (with the image folder ``images`` where the format takes one) as a reader.

    ``format`` names a row of :data:`DATASET_FORMATS`; None picks it with :func:`detect_format`. Raises
    :class:`InputError` for an unknown format name, an image folder given to a format that holds its images (or
    none given to one that needs it), and any problem the reader finds; a file that is not UTF-8 or cannot be read
    is an :class:`InputError` too, naming the file.
    """
    name = detect_format(data, images) if format is None else str(format)
    if name not in DATASET_FORMATS:
        raise InputError(f"unknown dataset format {name!r}; known formats: {', '.join(DATASET_FORMATS)}")
    fmt = DATASET_FORMATS[name]
    if fmt.needs_images and not images:
        raise InputError(f"dataset format {name} needs an image folder (--images)")
    if images and not fmt.needs_images:
        raise InputError(f"dataset format {name} holds its images: no image folder is read (drop --images)")
    try:
        return fmt.open(str(data), None if images is None else str(images))
    except UnicodeDecodeError as exc:
        raise InputError(f"{data}: not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:  # a directory, no permission, ...
        raise InputError(f"{data}: cannot read ({exc.strerror or exc})") from None


def require_random_access(reader: CaptionReader, purpose: str) -> IndexedCaptions:
    """``reader`` as an :class:`~ernievil2torch.data.readers.IndexedCaptions`; :class:`InputError` naming
    ``purpose`` when its format can only be streamed."""
    if not isinstance(reader, IndexedCaptions):
        raise InputError(f"dataset format {reader.format} can only be read as a stream; {purpose} needs a format "
                         "with random access")
    return reader
