"""An image folder plus a captions file that maps captions to image files (paths relative to the folder).

* ``.jsonl``: ``{"image": "a.jpg", "caption": "..."}`` or ``{"image": "a.jpg", "captions": ["...", ...]}``;
* ``.tsv`` (any other suffix): ``caption<TAB>image`` per line, with an optional header ``caption<TAB>image`` /
  ``text<TAB>image``; a header ``image<TAB>caption`` / ``image<TAB>text`` swaps the columns.

Images are numbered in first-mention order; an image's id is its name as written in the captions file.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Tuple, Union

from ..errors import InputError
from .readers import IndexedCaptions
from .records import iter_jsonl

_HEADERS = (["caption", "image"], ["text", "image"], ["image", "caption"], ["image", "text"])


def _jsonl_pairs(path: Path) -> List[Tuple[str, str]]:
    pairs: List[Tuple[str, str]] = []
    for num, obj, error in iter_jsonl(path):
        if error is not None:
            raise InputError(f"{path} line {num}: {error}")
        if not isinstance(obj, dict) or "image" not in obj or not ("caption" in obj or "captions" in obj):
            raise InputError(f"{path} line {num}: needs 'image' and 'caption' or 'captions'")
        texts = obj["captions"] if "captions" in obj else [obj["caption"]]
        pairs.extend((str(t), str(obj["image"])) for t in texts)
    return pairs


def _tsv_pairs(path: Path) -> List[Tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    text_col, image_col = 0, 1
    if rows and [c.strip().lower() for c in rows[0][:2]] in _HEADERS:
        if rows[0][0].strip().lower() == "image":
            text_col, image_col = 1, 0
        rows = rows[1:]
    pairs = []
    for num, row in enumerate(rows, 1):
        if len(row) < 2:
            raise InputError(f"{path} row {num}: expected 'caption<TAB>image'")
        pairs.append((row[text_col], row[image_col].strip()))
    return pairs


class CaptionFolderReader(IndexedCaptions):
    """``CaptionFolderReader(images, captions)``: the captions of ``captions``, their images files in ``images``.

    Raises :class:`InputError` for a missing folder or captions file, a malformed line or row, or no captions;
    ``UnicodeDecodeError`` for a captions file that is not UTF-8. :meth:`image` returns the image's path (whether
    it exists is :meth:`missing_images`' question; a missing one fails when it is decoded).
    """

    format = "caption_folder"

    def __init__(self, images: Union[str, Path], captions: Union[str, Path]) -> None:
        super().__init__()
        self.root, self.captions_path = Path(images), Path(captions)
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} not found")
        if not self.captions_path.is_file():
            raise InputError(f"{self.captions_path}: no such file")
        self._names: List[str] = []
        jsonl = self.captions_path.suffix.lower() == ".jsonl"
        for text, name in (_jsonl_pairs if jsonl else _tsv_pairs)(self.captions_path):
            self._add_caption(text, name, name, lambda: self._names.append(name))
        self._finish_index(str(self.captions_path))

    def image(self, number: int) -> str:
        """The path of image ``number`` (the folder joined with the name the captions file gives)."""
        return str(self.root / self._names[number])

    def missing_images(self) -> List[Tuple[int, str]]:
        return [(number, path) for number, path in enumerate(map(self.image, range(self.num_images)))
                if not Path(path).is_file()]
