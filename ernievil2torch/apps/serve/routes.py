"""The service's routes: module-level handlers, grouped into routers by :func:`page_router` and :func:`api_router`.

Each handler takes what it needs as parameters (FastAPI fills them from the request and from the dependencies in
:mod:`.dependencies`), so a test can call one directly. Two query parameters are bounded by the service's limits
(``q`` by ``max_text_chars``, ``k`` by ``max_k``); :func:`with_limits` gives a handler those bounds when a router
is built, so they are checked by FastAPI and shown in the OpenAPI schema.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import mimetypes
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any, Callable, Dict, List

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import InputError
from ..fonts import CJK_FONT_PACKAGE, cjk_font_file
from .batching import MicroBatcher
from .dependencies import (get_decode_executor, get_engine, get_image_batcher, get_limits, get_page, get_settings,
                           get_text_batcher, read_page)
from .engine import Answer, Query as EngineQuery, SearchEngine
from .inputs import check_text, decode_image_upload, upload_name
from .limits import ServeLimits
from .schemas import EmbeddingsOut, SearchOut, TextsIn, search_hits
from .thumbnails import browser_rendition
from .security import request_authorized
from .settings import ServiceSettings

Q_DESCRIPTION = "the query text, e.g. 一只猫"
K_DESCRIPTION = "results wanted"

#: Query parameters whose bounds are limits: parameter name -> its declaration under given limits, keeping the
#: default the handler declared (the gallery's k is 10, the photo library's 24: a page of its grid).
LIMITED_PARAMETERS: Dict[str, Callable[[ServeLimits, Any], Any]] = {
    "q": lambda limits, default: Query(default, min_length=1, max_length=limits.max_text_chars,
                                       description=Q_DESCRIPTION),
    "k": lambda limits, default: Query(default, ge=1, le=limits.max_k, description=K_DESCRIPTION),
}


def with_limits(handler: Callable[..., Any], limits: ServeLimits) -> Callable[..., Any]:
    """``handler`` with the parameters of :data:`LIMITED_PARAMETERS` it has declared under ``limits``, their
    declared defaults kept (a wrapper whose signature FastAPI reads; the call goes to ``handler`` unchanged)."""
    signature = inspect.signature(handler, eval_str=True)

    @functools.wraps(handler)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        return await handler(*args, **kwargs)

    bounded.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(default=LIMITED_PARAMETERS[p.name](limits, getattr(p.default, "default", p.default)))
        if p.name in LIMITED_PARAMETERS else p for p in signature.parameters.values()])
    return bounded


# ---- the page and health ----------------------------------------------------------------------------------------
async def index(page: str = Depends(get_page)) -> HTMLResponse:
    return HTMLResponse(page)


#: The page's own Chinese font (see static/index.html): browsers keep it for a week and never ask again.
FONT_PATH = "/assets/cjk-font.otf"


async def page_font() -> FileResponse:
    """The Noto Sans SC file the page draws Chinese with; 404 when ``pylopdf-fonts-zh-cn`` is not installed (the
    page then falls back to the system's fonts)."""
    font = cjk_font_file()
    if font is None:
        raise StarletteHTTPException(404, f"no page font here: pip install {CJK_FONT_PACKAGE}")
    return FileResponse(font, media_type="font/otf", headers={"Cache-Control": "public, max-age=604800, immutable"})


#: The style sheet and script both pages share (static/page.css, static/page.js), by path -> (file, media type).
PAGE_ASSETS = {"/assets/page.css": ("page.css", "text/css; charset=utf-8"),
               "/assets/page.js": ("page.js", "text/javascript; charset=utf-8")}


@functools.lru_cache(maxsize=None)
def _page_asset_text(name: str) -> str:
    """A shared page file, read from the package once per process (like the page itself, at start-up)."""
    return read_page(name)


async def page_asset(request: Request) -> Response:
    """One of :data:`PAGE_ASSETS`, from the package (like the pages, public: no data in it)."""
    name, media_type = PAGE_ASSETS[request.url.path]
    return Response(_page_asset_text(name), media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


async def healthz(request: Request, engine: SearchEngine = Depends(get_engine),
                  settings: ServiceSettings = Depends(get_settings),
                  text_batcher: MicroBatcher = Depends(get_text_batcher),
                  image_batcher: MicroBatcher = Depends(get_image_batcher)) -> Dict[str, Any]:
    """Liveness; with a token set, the details only for a caller that sends it."""
    status: Dict[str, Any] = {"status": "ok", "auth_required": settings.token is not None}
    if settings.token is None or request_authorized(request.headers.getlist("authorization"), settings.token):
        status.update(engine.describe())
        status["batching"] = {"text": text_batcher.stats.as_dict(), "image": image_batcher.stats.as_dict(),
                              "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms}
        status["limits"] = asdict(settings.limits)
    return status


# ---- the API ----------------------------------------------------------------------------------------------------
async def embed_text(body: TextsIn, limits: ServeLimits = Depends(get_limits),
                     batcher: MicroBatcher = Depends(get_text_batcher)) -> EmbeddingsOut:
    """L2-normalised text embeddings (official 48-token layout), in input order."""
    if not body.texts:
        raise InputError("texts: give at least one text")
    if len(body.texts) > limits.max_texts:
        raise InputError(f"texts: {len(body.texts)} texts, more than the limit of {limits.max_texts}")
    texts = [check_text(t, f"texts[{i}]", limits) for i, t in enumerate(body.texts)]
    answers: List[Answer] = await batcher.submit([EngineQuery(t) for t in texts])
    return EmbeddingsOut(embeddings=[a.embedding.tolist() for a in answers])


async def embed_image(files: List[UploadFile] = File(..., description="one or more images"),
                      limits: ServeLimits = Depends(get_limits), engine: SearchEngine = Depends(get_engine),
                      decoder: Executor = Depends(get_decode_executor),
                      batcher: MicroBatcher = Depends(get_image_batcher)) -> EmbeddingsOut:
    """L2-normalised image embeddings (official eval pipeline), in upload order."""
    if len(files) > limits.max_files:
        raise InputError(f"files: {len(files)} images, more than the limit of {limits.max_files}")
    crops = [await decode_image_upload(f, upload_name(i, f), engine, decoder) for i, f in enumerate(files)]
    answers: List[Answer] = await batcher.submit([EngineQuery(c) for c in crops])
    return EmbeddingsOut(embeddings=[a.embedding.tolist() for a in answers])


async def search_text(q: str = Query(..., min_length=1, description=Q_DESCRIPTION),
                      k: int = Query(10, ge=1, description=K_DESCRIPTION),
                      limits: ServeLimits = Depends(get_limits),
                      batcher: MicroBatcher = Depends(get_text_batcher)) -> SearchOut:
    """Text -> image: the k gallery images closest to the text by cosine, best first (exact)."""
    answer, = await batcher.submit([EngineQuery(check_text(q, "q", limits), k)])
    return SearchOut(query=q, k=k, results=search_hits(answer.hits or []))


async def search_image(file: UploadFile = File(..., description="the query image"),
                       k: int = Query(10, ge=1, description=K_DESCRIPTION),
                       engine: SearchEngine = Depends(get_engine), decoder: Executor = Depends(get_decode_executor),
                       batcher: MicroBatcher = Depends(get_image_batcher)) -> SearchOut:
    """Image -> image: the k gallery images closest to the upload by cosine, best first (exact)."""
    crop = await decode_image_upload(file, upload_name(None, file), engine, decoder)
    answer, = await batcher.submit([EngineQuery(crop, k)])
    return SearchOut(k=k, results=search_hits(answer.hits or []))


#: Photo formats browsers do not show: the gallery route answers a JPEG rendition of them instead.
BROWSERLESS_SUFFIXES = (".heic", ".heif")


async def gallery_image(row: int = Path(..., description="a gallery row (0-based, as in search results)"),
                        engine: SearchEngine = Depends(get_engine), executor: Executor = Depends(get_decode_executor)):
    """The gallery image of ``row``; only files inside the image root are served. A HEIC/HEIF photo is answered
    as a metadata-free JPEG (decoded on the decode pool), since browsers cannot show it."""
    path = engine.gallery.image_file(row)
    headers = {"Cache-Control": "private, max-age=3600"}
    if path.suffix.lower() in BROWSERLESS_SUFFIXES:  # an unreadable one: InputError, a JSON 422 like any other
        data = await asyncio.get_running_loop().run_in_executor(executor, browser_rendition, path)
        return Response(data, media_type="image/jpeg", headers=headers)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=headers)


# ---- routers ----------------------------------------------------------------------------------------------------
def page_router() -> APIRouter:
    """``GET /`` (the page) and its font (neither in the schema), and ``GET /healthz``."""
    router = APIRouter()
    router.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    router.add_api_route(FONT_PATH, page_font, methods=["GET"], response_class=FileResponse, include_in_schema=False)
    for path in PAGE_ASSETS:
        router.add_api_route(path, page_asset, methods=["GET"], include_in_schema=False)
    router.add_api_route("/healthz", healthz, methods=["GET"])
    return router


def api_router(limits: ServeLimits, searches: bool = True) -> APIRouter:
    """The ``/v1`` routes, their bounded parameters declared under ``limits``; without ``searches`` only the
    embedding routes (a photo library brings its own search routes: :mod:`.library_routes`)."""
    router = APIRouter()
    router.add_api_route("/v1/embed/text", embed_text, methods=["POST"], response_model=EmbeddingsOut)
    router.add_api_route("/v1/embed/image", embed_image, methods=["POST"], response_model=EmbeddingsOut)
    if not searches:
        return router
    router.add_api_route("/v1/search", with_limits(search_text, limits), methods=["GET"], response_model=SearchOut)
    router.add_api_route("/v1/search/image", with_limits(search_image, limits), methods=["POST"],
                         response_model=SearchOut)
    router.add_api_route("/v1/images/{row}", gallery_image, methods=["GET"], response_class=FileResponse,
                         responses={200: {"content": {"image/*": {}}, "description": "the image file"}})
    return router
