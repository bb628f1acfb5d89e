"""The folder a collection's images live under, and the one safe way from an image id to a file inside it.

Ids come from ``embed`` outputs (paths relative to the image root). :meth:`ImageRoot.resolve` refuses any id that
leads outside the root (absolute, ``..``, a symlink anywhere on the way), so a tool that opens or serves files by
id (the web service, ``dedup``'s picture) never reads a file the user did not put under the root.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import InputError
from .inputs import IMAGE_EXTENSIONS, PHONE_PHOTO_EXTENSIONS


class ImageLookupError(InputError):
    """An image id that cannot be resolved: ``status`` is the HTTP status that describes why (404 or 403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ImageRoot:
    """The folder images are read from; :meth:`resolve` is the only way from an id to a file.

    Raises :class:`~ernievil2torch.errors.InputError` when ``root`` is not a folder.
    """

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        path = Path(root)
        if not path.is_dir():
            raise InputError(f"image root '{root}' is not a folder")
        self.root = path.resolve(strict=True)

    def resolve(self, image_id: str) -> Path:
        """The real path of ``image_id`` under the root.

        Raises :class:`ImageLookupError` with status 403 when the id is absolute, holds a NUL, or leads outside
        the root (``..``, a symlink anywhere on the way), and 404 when the file is missing, not a regular file, or
        not an image by its extension (those an image folder lists, HEIC/HEIF included).
        """
        if "\x00" in image_id or os.path.isabs(image_id):
            raise ImageLookupError(f"refused: gallery id {image_id!r} is not a path inside the image root", 403)
        try:
            real = (self.root / image_id).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
            raise ImageLookupError(f"image file for {image_id!r} not found under the image root", 404) from None
        if not real.is_relative_to(self.root):
            raise ImageLookupError(f"refused: {image_id!r} leads outside the image root", 403)
        if not real.is_file():
            raise ImageLookupError(f"{image_id!r} is not a regular file", 404)
        if real.suffix.lower() not in IMAGE_EXTENSIONS | PHONE_PHOTO_EXTENSIONS:  # what image folders list
            raise ImageLookupError(f"{image_id!r} is not an image file ({real.suffix or 'no extension'})", 404)
        return real
