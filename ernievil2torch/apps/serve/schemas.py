"""The JSON bodies of the API (pydantic models: they validate requests and document responses in OpenAPI)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, StrictStr

from .gallery import Hit


class TextsIn(BaseModel):
    """``{"texts": ["...", ...]}``: a list of strings (nothing else, no other field)."""

    model_config = ConfigDict(extra="forbid")
    texts: List[StrictStr]


class SearchHit(BaseModel):
    row: int
    id: str
    score: float
    image_url: str


class SearchOut(BaseModel):
    query: Optional[str] = None
    k: int
    results: List[SearchHit]


class EmbeddingsOut(BaseModel):
    embeddings: List[List[float]]


def search_hits(hits: Sequence[Hit]) -> List[SearchHit]:
    """Gallery hits as API results, each with the URL of its image (``/v1/images/{row}``)."""
    return [SearchHit(row=h.row, id=h.id, score=h.score, image_url=f"/v1/images/{h.row}") for h in hits]
