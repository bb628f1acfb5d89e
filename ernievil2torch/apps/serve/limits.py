"""The service's limits on what one request may ask for (every one is a flag of ``ernievil2 serve``)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from ...errors import InputError


@dataclass(frozen=True)
class ServeLimits:
    """Bounds that keep one request from costing unbounded memory or time.

    * ``max_body_bytes``: the whole request body (a larger one gets 413 before or while it is read).
    * ``max_pixels``: pixels of one uploaded image, read from its header before decoding (413 above it); Pillow's
      decompression-bomb guard stays in force as well.
    * ``max_files``: images in one ``/v1/embed/image`` request.
    * ``max_texts`` / ``max_text_chars``: texts in one ``/v1/embed/text`` request, and characters per text (and
      per ``q``).
    * ``max_k``: results per search (``k`` must be in ``1..max_k``).
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16
    max_texts: int = 64
    max_text_chars: int = 1000
    max_k: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{f.name} must be a positive integer, got {value!r}")
