"""Image-caption datasets in the formats ``eval`` (and ``finetune``) read.

* the official COCO-CN style TSV (``text<TAB>image_id<TAB>base64 image`` per line);
* an image folder plus a captions file (``.jsonl`` or ``.tsv``).
"""
from __future__ import annotations

import base64
import binascii
import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Hashable, List, Tuple, Union

from ..errors import InputError
from .records import iter_jsonl


@dataclass
class RetrievalData:
    """Captions and their images: ``text_image[t]`` indexes ``images`` (paths or encoded bytes)."""

    texts: List[str] = field(default_factory=list)
    text_image: List[int] = field(default_factory=list)
    images: List[Any] = field(default_factory=list)
    image_ids: List[str] = field(default_factory=list)
    _index: Dict[Hashable, int] = field(default_factory=dict, repr=False, compare=False)

    def add_caption(self, text: str, key: Hashable, image_id: str, source: Callable[[], Any]) -> None:
        """Add caption ``text`` of the image identified by ``key``; the first caption of a new key appends the
        image, taking its source from ``source()`` (so a base64 image is decoded once, not once per caption)."""
        if key not in self._index:
            self._index[key] = len(self.images)
            self.images.append(source())
            self.image_ids.append(image_id)
        self.texts.append(text)
        self.text_image.append(self._index[key])


def _open_text(path: Path, **kwargs) -> IO[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return open(path, encoding="utf-8", **kwargs)


def _decode_base64(b64: str, where: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where}: bad base64 image ({exc})") from None


def load_coco_cn_tsv(path: Union[str, Path]) -> RetrievalData:
    """The official test file (e.g. ``test.coco_cn.data``): ``text<TAB>image_id<TAB>base64 image`` per line,
    one caption per line, an image repeated on the lines of each of its captions. As in the official reader
    the line is stripped and split on tabs: text = first field, image = last field, id = second field."""
    data = RetrievalData()
    with _open_text(Path(path)) as handle:
        for num, line in enumerate(handle, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) < 2:
                raise InputError(f"{path} line {num}: expected 'text<TAB>image_id<TAB>base64', got 1 field")
            text, b64 = fields[0], fields[-1]
            image_id = fields[1] if len(fields) >= 3 else f"line{num}"
            key = (image_id, hashlib.sha1(b64.encode("ascii", "replace")).hexdigest())
            data.add_caption(text, key, image_id, lambda: _decode_base64(b64, f"{path} line {num}"))
    if not data.texts:
        raise InputError(f"{path}: no captions")
    return data


def load_caption_folder(images: Union[str, Path], captions: Union[str, Path]) -> RetrievalData:
    """An image folder plus a captions file mapping captions to image files (paths relative to the folder):

    * ``.jsonl``: ``{"image": "a.jpg", "caption": "..."}`` or ``{"image": "a.jpg", "captions": ["...", ...]}``;
    * ``.tsv``: ``caption<TAB>image`` per line (an optional header ``caption<TAB>image`` / ``text<TAB>image``;
      ``image<TAB>caption`` is recognised by its header).
    Images are listed in first-mention order.
    """
    root, cap = Path(images), Path(captions)
    if not root.is_dir():
        raise InputError(f"image folder {root} not found")
    if not cap.is_file():
        raise InputError(f"{cap}: no such file")
    pairs: List[Tuple[str, str]] = []
    if cap.suffix.lower() == ".jsonl":
        for num, obj, error in iter_jsonl(cap):
            if error is not None:
                raise InputError(f"{cap} line {num}: {error}")
            if not isinstance(obj, dict) or "image" not in obj or not ("caption" in obj or "captions" in obj):
                raise InputError(f"{cap} line {num}: needs 'image' and 'caption' or 'captions'")
            texts = obj["captions"] if "captions" in obj else [obj["caption"]]
            pairs.extend((str(t), str(obj["image"])) for t in texts)
    else:
        with _open_text(cap, newline="") as handle:
            rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        text_col, image_col = 0, 1
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["caption", "image"], ["text", "image"],
                                                                   ["image", "caption"], ["image", "text"]):
            if rows[0][0].strip().lower() == "image":
                text_col, image_col = 1, 0
            rows = rows[1:]
        for num, row in enumerate(rows, 1):
            if len(row) < 2:
                raise InputError(f"{cap} row {num}: expected 'caption<TAB>image'")
            pairs.append((row[text_col], row[image_col].strip()))
    data = RetrievalData()
    for text, name in pairs:
        data.add_caption(text, name, name, lambda: str(root / name))
    if not data.texts:
        raise InputError(f"{cap}: no captions")
    return data
