"""The search routes of ``serve --db`` / ``--uri`` (a :class:`~.library.PhotoLibrary`): text -> photos, image ->
photos (an upload, or "more like this" by id), folder and date filters, pages, thumbnails.

Same paths as the gallery form where they mean the same (``/v1/search``, ``/v1/search/image``); results name
photos by id and carry ``thumb_url`` (a small EXIF-free JPEG for grids) and ``photo_url`` (the photo itself, for
one photo at a time). Every call into Milvus blocks: it runs in the library's thread pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import mimetypes
from concurrent.futures import Executor
from datetime import date
from typing import List, Optional

from fastapi import APIRouter, Depends, File, Path, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel

from ...errors import InputError
from .batching import MicroBatcher
from .dependencies import (get_decode_executor, get_engine, get_image_batcher, get_library_executor, get_limits,
                           get_text_batcher)
from .engine import Answer, Query as EngineQuery, SearchEngine
from .inputs import check_text, decode_image_upload, upload_name
from .library import MAX_FOLDER_CHARS, LibraryFilter, LibraryHit, PhotoLibrary
from .limits import ServeLimits
from .routes import K_DESCRIPTION, Q_DESCRIPTION, with_limits

#: Deepest result a page may reach: ``offset + k`` stays within what Milvus answers in one search.
MAX_WINDOW = 16_384
ID_DESCRIPTION = "a photo id (32 hex digits, from search results)"


class PhotoHit(BaseModel):
    id: str
    score: float
    path: str
    folder: str
    taken: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    thumb_url: str
    photo_url: str


class PhotoSearchOut(BaseModel):
    query: Optional[str] = None
    like: Optional[str] = None
    k: int
    offset: int
    results: List[PhotoHit]
    next_offset: Optional[int] = None


class FoldersOut(BaseModel):
    folders: List[str]


def _hits(hits: List[LibraryHit]) -> List[PhotoHit]:
    return [PhotoHit(id=h.id, score=h.score, path=h.path, folder=h.folder, taken=h.taken, width=h.width,
                     height=h.height, thumb_url=f"/v1/thumbs/{h.id}", photo_url=f"/v1/photos/{h.id}") for h in hits]


def _library(engine: SearchEngine) -> PhotoLibrary:
    return engine.gallery  # type: ignore[return-value]


async def _search(engine: SearchEngine, pool: Executor, vector, k: int, offset: int, filters: LibraryFilter,
                  **named) -> PhotoSearchOut:
    """One page of hits for ``vector``; the routes checked the page and the filters before any work
    (:func:`_checked_before_work`)."""
    where = filters.where()
    loop = asyncio.get_running_loop()
    hits, = await loop.run_in_executor(pool, lambda: _library(engine).search(vector[None, :], k, where, offset))
    return PhotoSearchOut(k=k, offset=offset, results=_hits(hits), next_offset=offset + k if len(hits) == k else None,
                          **named)


def _filters(folder: Optional[str] = Query(None, max_length=MAX_FOLDER_CHARS,
                                           description="only photos in this folder (relative) or below it"),
             taken_from: Optional[date] = Query(None, description="taken on or after this day (YYYY-MM-DD)"),
             taken_to: Optional[date] = Query(None, description="taken on or before this day (YYYY-MM-DD)")
             ) -> LibraryFilter:
    return LibraryFilter(folder, taken_from, taken_to)


OFFSET = Query(0, ge=0, lt=MAX_WINDOW, description="results to skip (paging)")
LIBRARY_POOL = Depends(get_library_executor)


async def search_text(q: str = Query(..., min_length=1, description=Q_DESCRIPTION),
                      k: int = Query(24, ge=1, description=K_DESCRIPTION), offset: int = OFFSET,
                      filters: LibraryFilter = Depends(_filters), limits: ServeLimits = Depends(get_limits),
                      engine: SearchEngine = Depends(get_engine), pool: Executor = LIBRARY_POOL,
                      batcher: MicroBatcher = Depends(get_text_batcher)) -> PhotoSearchOut:
    """Text -> photos: the closest photos to the text by cosine (approximate: HNSW), best first, filtered."""
    _checked_before_work(k, offset, filters)
    answer, = await batcher.submit([EngineQuery(check_text(q, "q", limits))])
    return await _search(engine, pool, answer.embedding, k, offset, filters, query=q)


async def search_image(file: UploadFile = File(..., description="the query image"),
                       k: int = Query(24, ge=1, description=K_DESCRIPTION), offset: int = OFFSET,
                       filters: LibraryFilter = Depends(_filters), engine: SearchEngine = Depends(get_engine),
                       decoder: Executor = Depends(get_decode_executor), pool: Executor = LIBRARY_POOL,
                       batcher: MicroBatcher = Depends(get_image_batcher)) -> PhotoSearchOut:
    """Image -> photos: the closest photos to an uploaded image, filtered."""
    _checked_before_work(k, offset, filters)
    crop = await decode_image_upload(file, upload_name(None, file), engine, decoder)
    answer: Answer
    answer, = await batcher.submit([EngineQuery(crop)])
    return await _search(engine, pool, answer.embedding, k, offset, filters)


async def similar(photo_id: str = Path(..., max_length=64, description=ID_DESCRIPTION),
                  k: int = Query(24, ge=1, description=K_DESCRIPTION), offset: int = OFFSET,
                  filters: LibraryFilter = Depends(_filters),
                  engine: SearchEngine = Depends(get_engine), pool: Executor = LIBRARY_POOL) -> PhotoSearchOut:
    """More like this: the photos closest to a photo of the library (itself first), filtered; no model call."""
    _checked_before_work(k, offset, filters)
    loop = asyncio.get_running_loop()
    vector = await loop.run_in_executor(pool, _library(engine).vector, photo_id)
    return await _search(engine, pool, vector, k, offset, filters, like=photo_id)


async def thumbnail(photo_id: str = Path(..., max_length=64, description=ID_DESCRIPTION),
                    engine: SearchEngine = Depends(get_engine), pool: Executor = LIBRARY_POOL) -> FileResponse:
    """A photo's thumbnail (at most 320 px, JPEG, no EXIF: no GPS position), made once and cached."""
    loop = asyncio.get_running_loop()
    path = await loop.run_in_executor(pool, _library(engine).thumbnail, photo_id)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


async def photo(photo_id: str = Path(..., max_length=64, description=ID_DESCRIPTION),
                engine: SearchEngine = Depends(get_engine), pool: Executor = LIBRARY_POOL) -> FileResponse:
    """The photo file itself (only files inside the indexed folders; never the database's files)."""
    loop = asyncio.get_running_loop()
    path = await loop.run_in_executor(pool, _library(engine).photo_file, photo_id)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


async def folders(engine: SearchEngine = Depends(get_engine), pool: Executor = LIBRARY_POOL) -> FoldersOut:
    """The library's folders (for the folder filter), at most 500."""
    loop = asyncio.get_running_loop()
    return FoldersOut(folders=await loop.run_in_executor(pool, _library(engine).folders))


def library_router(limits: ServeLimits) -> APIRouter:
    """The ``/v1`` search routes over a photo library, their bounded parameters declared under ``limits``."""
    router = APIRouter()
    router.add_api_route("/v1/search", with_limits(search_text, limits), methods=["GET"],
                         response_model=PhotoSearchOut)
    router.add_api_route("/v1/search/image", with_limits(search_image, limits), methods=["POST"],
                         response_model=PhotoSearchOut)
    router.add_api_route("/v1/similar/{photo_id}", with_limits(similar, limits), methods=["GET"],
                         response_model=PhotoSearchOut)
    router.add_api_route("/v1/thumbs/{photo_id}", thumbnail, methods=["GET"], response_class=FileResponse,
                         responses={200: {"content": {"image/jpeg": {}}, "description": "the thumbnail"}})
    router.add_api_route("/v1/photos/{photo_id}", photo, methods=["GET"], response_class=FileResponse,
                         responses={200: {"content": {"image/*": {}}, "description": "the photo file"}})
    router.add_api_route("/v1/folders", folders, methods=["GET"], response_model=FoldersOut)
    return router


def _checked_before_work(k: int, offset: int, filters: LibraryFilter) -> None:
    """:class:`InputError` for a page past :data:`MAX_WINDOW` or a bad filter, raised before the model encodes the
    query or an upload is decoded (a refused request costs no model time)."""
    if offset + k > MAX_WINDOW:
        raise InputError(f"offset + k must be at most {MAX_WINDOW}")
    filters.where()
