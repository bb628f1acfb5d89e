"""The HTTP service: a FastAPI app over a :class:`~.engine.SearchEngine` (OpenAPI at ``/docs``, page at ``/``).

Routes (JSON unless said otherwise; with a token every ``/v1`` route needs ``Authorization: Bearer TOKEN``):

* ``GET /healthz`` -> ``{"status": "ok", ...}`` (model, gallery size, batching statistics, limits);
* ``POST /v1/embed/text`` ``{"texts": [...]}`` -> ``{"embeddings": [[D floats], ...]}`` (L2-normalised);
* ``POST /v1/embed/image`` multipart ``files`` (one or more images) -> ``{"embeddings": [...]}``;
* ``GET /v1/search?q=TEXT&k=10`` -> ``{"results": [{"row", "id", "score", "image_url"}, ...]}``, best first,
  exact cosine top-k over the whole gallery;
* ``POST /v1/search/image?k=10`` multipart ``file`` -> the same shape (image -> image);
* ``GET /v1/images/{row}`` -> the gallery image of that row (rows only, never a client path);
* ``GET /`` -> the search page (``static/index.html``, no build step, no CDN).

Every bad request gets a JSON 4xx ``{"error": "..."}`` naming the problem: 422 for invalid parameters, bodies and
uploads, 413 for a body over the size limit or an image over the pixel limit, 404 for an unknown row, 403 for a
gallery file that leads outside the image root, 401 for a missing token, 400 for a foreign ``Host``. Model calls go
through two :class:`~.batching.MicroBatcher` s (texts, images) on one model thread; uploads are decoded on a
small thread pool; the event loop only routes.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fastapi import FastAPI, File, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import ImageTooLargeError, InputError
from .batching import MicroBatcher
from .engine import Answer, Query as EngineQuery, SearchEngine
from .gallery import Hit, ImageLookupError
from .limits import ServeLimits
from .middleware import BearerAuth, BodyLimit, HostCheck, SecurityHeaders, error_response
from .security import LOOPBACK_HOST_NAMES, token_matches

log = logging.getLogger("ernievil2torch.serve")

#: Content types an upload may declare (browsers send image/*; curl and scripts often octet-stream or none).
UPLOAD_CONTENT_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class ServiceSettings:
    """How the app batches, bounds and guards requests (see ``ernievil2 serve --help`` for each flag).

    ``allowed_hosts``: ``Host`` header names answered (None: any; :func:`create_app` is given the loopback set
    for a loopback bind). ``cors_origins``: origins allowed to call the API from other sites (none by default).
    """

    limits: ServeLimits = ServeLimits()
    token: Optional[str] = None
    allowed_hosts: Optional[Tuple[str, ...]] = tuple(sorted(LOOPBACK_HOST_NAMES))
    cors_origins: Tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 5.0
    decode_workers: int = 2


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


def _hits(hits: Sequence[Hit]) -> List[SearchHit]:
    return [SearchHit(row=h.row, id=h.id, score=h.score, image_url=f"/v1/images/{h.row}") for h in hits]


def _validation_message(errors: Sequence[Dict[str, Any]]) -> str:
    """One line naming each problem (the first five): ``texts.0: Input should be a valid string``."""
    parts = []
    for error in errors[:5]:
        loc = list(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid")
            parts.append(f"malformed JSON body (at character {loc[-1]}): {reason}")
            continue
        where = ".".join(str(p) for p in loc if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _page() -> str:
    return resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")


def create_app(engine: SearchEngine, settings: ServiceSettings = ServiceSettings()) -> FastAPI:
    """The service over ``engine``; batchers and thread pools start and stop with the app's lifespan."""
    limits = settings.limits
    wait_s = settings.max_wait_ms / 1000.0
    # One model thread for both batchers (model calls never compete with each other); uploads decode on a pool.
    # Both pools are made per lifespan, so the app can be started again after a shutdown.
    pools: Dict[str, ThreadPoolExecutor] = {}
    text_batcher = MicroBatcher(engine.text_batch, None, settings.max_batch, wait_s, name="text")
    image_batcher = MicroBatcher(engine.image_batch, None, settings.max_batch, wait_s, name="image")
    page = _page()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        pools["model"] = ThreadPoolExecutor(1, thread_name_prefix="ernievil2-model")
        pools["decode"] = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="ernievil2-decode")
        text_batcher.executor = image_batcher.executor = pools["model"]
        await text_batcher.start()
        await image_batcher.start()
        try:
            yield
        finally:
            await text_batcher.stop()
            await image_batcher.stop()
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="ERNIE-ViL 2.0 image search", version="1", lifespan=lifespan,
                  description="Text->image and image->image search over your own photos (ernievil2torch).")

    # ---- errors: always JSON, never a traceback -----------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = json.loads(json.dumps(exc.errors(), default=str))
        return JSONResponse({"error": _validation_message(exc.errors()), "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"{message.lower()}: {request.method} {request.url.path}"
        elif exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's wording
            message = ("could not parse the request body: send UTF-8 JSON (/v1/embed/text) or multipart form data "
                       "(uploads)")
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, exc: InputError) -> JSONResponse:
        status = exc.status if isinstance(exc, ImageLookupError) else 413 if isinstance(exc, ImageTooLargeError) \
            else 422
        return error_response(status, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (the server log has the details)")

    # ---- helpers ------------------------------------------------------------------------------------------------
    async def decode(upload: UploadFile, name: str):
        declared = (upload.content_type or "").lower()
        if declared and not declared.startswith(UPLOAD_CONTENT_TYPES):
            raise InputError(f"{name}: content type {declared!r} is not an image")
        data = await upload.read()
        if not data:
            raise InputError(f"{name}: empty upload (zero bytes), not an image")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pools["decode"], engine.decode_upload, data, name)
        except InputError as exc:
            text = str(exc).replace("image #0 (", f"{name} (", 1)
            raise type(exc)(text) from None

    def upload_name(index: Optional[int], upload: UploadFile) -> str:
        where = "file" if index is None else f"files[{index}]"
        return f"{where} {upload.filename!r}" if upload.filename else where

    def check_text(text: str, where: str) -> str:
        if not text.strip():
            raise InputError(f"{where}: empty text")
        if len(text) > limits.max_text_chars:
            raise InputError(f"{where}: {len(text)} characters, more than the limit of {limits.max_text_chars}")
        return text

    # ---- routes -------------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz(request: Request) -> Dict[str, Any]:
        """Liveness; with a token set, the details only for a caller that sends it."""
        status: Dict[str, Any] = {"status": "ok", "auth_required": settings.token is not None}
        if settings.token is None or token_matches(request.headers.get("authorization"), settings.token):
            status.update(engine.describe())
            status["batching"] = {"text": text_batcher.stats.as_dict(), "image": image_batcher.stats.as_dict(),
                                  "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms}
            status["limits"] = asdict(limits)
        return status

    @app.post("/v1/embed/text", response_model=EmbeddingsOut)
    async def embed_text(body: TextsIn) -> EmbeddingsOut:
        """L2-normalised text embeddings (official 48-token layout), in input order."""
        if not body.texts:
            raise InputError("texts: give at least one text")
        if len(body.texts) > limits.max_texts:
            raise InputError(f"texts: {len(body.texts)} texts, more than the limit of {limits.max_texts}")
        texts = [check_text(t, f"texts[{i}]") for i, t in enumerate(body.texts)]
        answers: List[Answer] = await text_batcher.submit([EngineQuery(t) for t in texts])
        return EmbeddingsOut(embeddings=[a.embedding.tolist() for a in answers])

    @app.post("/v1/embed/image", response_model=EmbeddingsOut)
    async def embed_image(files: List[UploadFile] = File(..., description="one or more images")) -> EmbeddingsOut:
        """L2-normalised image embeddings (official eval pipeline), in upload order."""
        if len(files) > limits.max_files:
            raise InputError(f"files: {len(files)} images, more than the limit of {limits.max_files}")
        crops = [await decode(f, upload_name(i, f)) for i, f in enumerate(files)]
        answers: List[Answer] = await image_batcher.submit([EngineQuery(c) for c in crops])
        return EmbeddingsOut(embeddings=[a.embedding.tolist() for a in answers])

    @app.get("/v1/search", response_model=SearchOut)
    async def search_text(q: str = Query(..., min_length=1, max_length=limits.max_text_chars,
                                         description="the query text, e.g. 一只猫"),
                          k: int = Query(10, ge=1, le=limits.max_k, description="results wanted")) -> SearchOut:
        """Text -> image: the k gallery images closest to the text by cosine, best first (exact)."""
        answer, = await text_batcher.submit([EngineQuery(check_text(q, "q"), k)])
        return SearchOut(query=q, k=k, results=_hits(answer.hits or []))

    @app.post("/v1/search/image", response_model=SearchOut)
    async def search_image(file: UploadFile = File(..., description="the query image"),
                           k: int = Query(10, ge=1, le=limits.max_k, description="results wanted")) -> SearchOut:
        """Image -> image: the k gallery images closest to the upload by cosine, best first (exact)."""
        crop = await decode(file, upload_name(None, file))
        answer, = await image_batcher.submit([EngineQuery(crop, k)])
        return SearchOut(k=k, results=_hits(answer.hits or []))

    @app.get("/v1/images/{row}", response_class=FileResponse,
             responses={200: {"content": {"image/*": {}}, "description": "the image file"}})
    async def gallery_image(row: int = Path(..., description="a gallery row (0-based, as in search results)")):
        """The gallery image of ``row``; only files inside the image root are served."""
        path = engine.gallery.image_file(row)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    _add_security_scheme(app, settings.token is not None)
    # Added innermost first: the last one added runs first on a request.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if settings.token is not None:
        app.add_middleware(BearerAuth, token=settings.token)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.state.batchers = {"text": text_batcher, "image": image_batcher}
    return app


def _add_security_scheme(app: FastAPI, enabled: bool) -> None:
    """Declare the bearer token in the OpenAPI schema (so /docs offers "Authorize") when one is required."""
    if not enabled:
        return
    build = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
