"""Thumbnails for the result grid: made once per photo content, cached on disk, carrying no metadata.

A thumbnail is the photo turned upright (EXIF orientation applied), shrunk to fit :data:`THUMB_SIZE` pixels and
saved as a new JPEG from its pixels alone: no EXIF (so no GPS position or camera serial), no XMP, no ICC profile,
no comments. The cache is keyed by the photo's content hash, so an edited photo gets a new thumbnail and copies
share one; files are written to a temporary name and renamed, so a reader never sees half a thumbnail.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from ...errors import InputError

#: Longest side of a thumbnail in pixels (sharp in a grid on a high-density screen).
THUMB_SIZE = 320
QUALITY = 82


class ThumbnailCache:
    """Thumbnails under ``folder`` (made when first needed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def get(self, photo: Path, content_hash: str) -> Path:
        """The thumbnail of ``photo`` (whose content hash is ``content_hash``), made now if not cached."""
        key = "".join(c for c in content_hash if c.isalnum())[:64] or "unnamed"
        target = self.folder / key[:2] / f"{key}-{THUMB_SIZE}.jpg"
        if target.is_file():
            return target
        with self._lock:  # one maker at a time: a burst of requests for one grid does not decode a photo twice
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                make_thumbnail(photo, target)
        return target


def make_thumbnail(photo: Path, target: Path) -> None:
    """Write ``photo``'s thumbnail to ``target`` atomically (see the module docstring)."""
    from PIL import Image, ImageOps

    from ..index.files import register_heif

    register_heif()
    try:
        with Image.open(photo) as image:
            image.draft("RGB", (THUMB_SIZE * 2, THUMB_SIZE * 2))  # JPEG: decode at a reduced scale
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot make a thumbnail of this photo: {exc}") from None
    upright.thumbnail((THUMB_SIZE, THUMB_SIZE))
    clean = Image.new("RGB", upright.size)
    clean.paste(upright)  # a new image: nothing of the original's info dict comes along
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".jpg")
    try:
        with os.fdopen(handle, "wb") as out:
            clean.save(out, format="JPEG", quality=QUALITY, optimize=True)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
