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


#: Longest side of the JPEG a browser gets for a photo in a format it cannot show (HEIC/HEIF).
RENDITION_SIZE = 2048


def clean_upright(photo: Path, size: int, what: str):
    """``photo`` turned upright and shrunk to fit ``size`` pixels, as a new RGB image made from its pixels alone
    (no EXIF, XMP, ICC profile or comment comes along); :class:`InputError` naming ``what`` when it cannot be read."""
    from PIL import Image, ImageOps

    from ..index.files import register_heif

    register_heif()
    try:
        with Image.open(photo) as image:
            image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot make {what} of this photo: {exc}") from None
    upright.thumbnail((size, size))
    clean = Image.new("RGB", upright.size)
    clean.paste(upright)  # a new image: nothing of the original's info dict comes along
    return clean


def browser_rendition(photo: Path) -> bytes:
    """A JPEG of ``photo`` (at most :data:`RENDITION_SIZE` pixels a side, metadata-free like a thumbnail) for a
    browser that cannot show its format (HEIC/HEIF)."""
    import io

    out = io.BytesIO()
    clean_upright(photo, RENDITION_SIZE, "a browser image").save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_thumbnail(photo: Path, target: Path) -> None:
    """Write ``photo``'s thumbnail to ``target`` atomically (see the module docstring)."""
    clean = clean_upright(photo, THUMB_SIZE, "a thumbnail")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".jpg")
    try:
        with os.fdopen(handle, "wb") as out:
            clean.save(out, format="JPEG", quality=QUALITY, optimize=True)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
