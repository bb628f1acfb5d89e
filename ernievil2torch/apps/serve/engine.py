"""What the service computes, free of HTTP: upload decoding, batched text/image encoding, gallery search.

Every method here is synchronous and meant to run in a worker thread (see :mod:`.batching`): ``text_batch`` and
``image_batch`` are the micro-batchers' ``run_batch`` functions (one model call per batch, then one search over the
gallery for the queries that asked for one), ``decode_upload`` runs in the decoding pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ...constants import DEFAULT_MAX_LENGTH
from ...errors import InputError
from ...pretrained import Pretrained
from ...processing import ErnieViL2ImageProcessor
from ...processing.length_groups import LengthGroupedTexts
from ...storage.provenance import has_synthetic_weights
from .gallery import Gallery, Hit
from .limits import ServeLimits

#: Pillow formats an upload may be: common photo formats only (no EPS/PDF/... whose plugins do far more).
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass
class Query:
    """One item for a batcher: a text (str) or a decoded 224x224 RGB crop, and ``k`` > 0 to also search."""

    payload: Union[str, np.ndarray]
    k: int = 0


@dataclass
class Answer:
    """The L2-normalised embedding of a :class:`Query` and, when it asked for a search, its hits (best first)."""

    embedding: np.ndarray
    hits: Optional[List[Hit]] = None


class SearchEngine:
    """A loaded model (:func:`~ernievil2torch.pretrained.load_pretrained`) over a :class:`Gallery`; uploads are
    decoded by the model's image processor, with ``fast_decode`` at a reduced JPEG scale."""

    def __init__(self, pretrained: Pretrained, gallery: Gallery, limits: Optional[ServeLimits] = None,
                 max_length: int = DEFAULT_MAX_LENGTH, fast_decode: bool = False) -> None:
        self.model = pretrained.model
        self.tokenizer = pretrained.require_tokenizer()
        self.image_processor = pretrained.image_processor
        if fast_decode:
            self.image_processor = ErnieViL2ImageProcessor(image_size=self.image_processor.image_size,
                                                           resample=self.image_processor.resample, fast_decode=True)
        self.gallery = gallery
        self.limits = limits or ServeLimits()
        self.max_length = max_length
        self.model_dir = str(pretrained.path)
        self.synthetic = has_synthetic_weights(pretrained.path)
        dims = {self.model.config.text.hidden_size, self.model.config.vision.hidden_size}
        if dims != {gallery.dim}:
            raise InputError(f"the gallery holds {gallery.dim}-d embeddings but the model makes {sorted(dims)}-d "
                             "ones: embed the gallery with this model")

    def decode_upload(self, data: bytes, name: str) -> np.ndarray:
        """An uploaded file to the 224x224x3 uint8 crop the image tower takes (official pipeline; a JPEG decoded
        at a reduced scale first with ``fast_decode``).

        Raises :class:`~ernievil2torch.errors.InputError` for anything that is not one of :data:`UPLOAD_FORMATS`
        or cannot be decoded, and its subclass ``ImageTooLargeError`` above ``limits.max_pixels``.
        """
        rgb = self.image_processor.load_image(data, max_pixels=self.limits.max_pixels, formats=UPLOAD_FORMATS)
        return self.image_processor.resize_crop(rgb)

    @torch.inference_mode()
    def text_batch(self, queries: Sequence[Query]) -> List[Answer]:
        """Encode a batch of texts in one model call (official layout, padded only to the batch's longest text:
        :class:`LengthGroupedTexts` with one group) and search those with ``k``."""
        groups = LengthGroupedTexts(self.tokenizer, [q.payload for q in queries], len(queries), self.max_length)
        features = groups.encode(lambda ids, mask: self.model.encode_text(ids, mask, normalize=True))
        return self._answer(queries, features)

    @torch.inference_mode()
    def image_batch(self, queries: Sequence[Query]) -> List[Answer]:
        """Encode a batch of decoded crops in one model call and search those with ``k``."""
        pixels = self.image_processor.normalize([q.payload for q in queries])
        features = self.model.encode_image(pixels.to(self.model.device, self.model.dtype), normalize=True)
        return self._answer(queries, features)

    def _answer(self, queries: Sequence[Query], features: torch.Tensor) -> List[Answer]:
        embeddings = features.float().cpu().numpy()
        answers = [Answer(e) for e in embeddings]
        searching = [i for i, q in enumerate(queries) if q.k > 0]
        if searching:
            k = max(queries[i].k for i in searching)
            # Results are ordered (score desc, row asc), so a smaller k's answer is the prefix of the largest k's.
            hits = self.gallery.search(embeddings[searching], k)
            for i, row in zip(searching, hits):
                answers[i].hits = row[:queries[i].k]
        return answers

    def describe(self) -> dict:
        """Model and gallery facts for ``/healthz`` and the page."""
        return {"model": self.model_dir, "synthetic_weights": self.synthetic, "gallery_size": len(self.gallery),
                "dim": self.gallery.dim, "search_backend": self.gallery.backend.name, "device": str(self.model.device),
                "dtype": str(self.model.dtype).replace("torch.", "")}
