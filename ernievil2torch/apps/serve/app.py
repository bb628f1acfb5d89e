"""The HTTP service: a FastAPI app over a :class:`~.engine.SearchEngine` (OpenAPI at ``/docs``, page at ``/``).

Routes (JSON unless said otherwise; with a token every ``/v1`` route needs ``Authorization: Bearer TOKEN``):

* ``GET /healthz`` -> ``{"status": "ok", ...}`` (model, gallery size, batching statistics, limits);
* ``POST /v1/embed/text`` ``{"texts": [...]}`` -> ``{"embeddings": [[D floats], ...]}`` (L2-normalised);
* ``POST /v1/embed/image`` multipart ``files`` (one or more images) -> ``{"embeddings": [...]}``;
* ``GET /v1/search?q=TEXT&k=10`` -> ``{"results": [{"row", "id", "score", "image_url"}, ...]}``, best first,
  exact cosine top-k over the whole gallery;
* ``POST /v1/search/image?k=10`` multipart ``file`` -> the same shape (image -> image);
* ``GET /v1/images/{row}`` -> the gallery image of that row (rows only, never a client path);
* ``GET /`` -> the search page (``static/index.html``, no build step, no CDN; ``/?q=TEXT`` opens it with that
  search) and ``GET /assets/cjk-font.otf``, the Chinese font it carries;
* ``GET /docs`` and ``/redoc`` -> the API pages, their scripts served from ``/docs-assets`` (no CDN).

Every bad request gets a JSON 4xx ``{"error": "..."}`` naming the problem: 422 for invalid parameters, bodies and
uploads, 413 for a body over the size limit or an image over the pixel limit, 404 for an unknown row, 403 for a
gallery file that leads outside the image root, 401 for a missing token, 400 for a foreign ``Host``. Model calls go
through two :class:`~.batching.MicroBatcher` s (texts, images) on one model thread; uploads are decoded on a
small thread pool; the event loop only routes.

The parts live apart: :mod:`.routes` (handlers and routers), :mod:`.dependencies` (state, lifespan),
:mod:`.error_handlers`, :mod:`.middleware`; :func:`create_app` only assembles them.
"""
from __future__ import annotations

from typing import Any, Dict

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from .dependencies import install_state, lifespan
from .engine import SearchEngine
from .error_handlers import install_error_handlers
from .middleware import BearerAuth, BodyLimit, HostCheck, SecurityHeaders
from .library import PhotoLibrary
from .library_routes import library_router
from .routes import api_router, page_router
from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]

#: Where /docs and /redoc load Swagger UI's and ReDoc's files from: this service, never a CDN (``fastapi-offline``
#: ships them), so the API pages work on a machine without internet access.
DOCS_ASSETS = "/docs-assets"


def create_app(engine: SearchEngine, settings: ServiceSettings = ServiceSettings()) -> FastAPI:
    """The service over ``engine``; batchers and thread pools start and stop with the app's lifespan."""
    app = FastAPIOffline(title="ERNIE-ViL 2.0 image search", version="1", lifespan=lifespan,
                         static_url=DOCS_ASSETS,
                         description="Text->image and image->image search over your own photos (ernievil2torch).")
    install_state(app, engine, settings)
    install_error_handlers(app)
    app.include_router(page_router())
    library = isinstance(getattr(engine, "gallery", None), PhotoLibrary)
    app.include_router(api_router(settings.limits, searches=not library))
    if library:
        app.include_router(library_router(settings.limits))
    add_security_scheme(app, settings.token is not None)
    add_middleware(app, settings)
    return app


def add_middleware(app: FastAPI, settings: ServiceSettings) -> None:
    """The request checks, outermost first: CORS (when asked for), security headers, Host, token, body size.

    Added innermost first: the last one added runs first on a request, so a refused request costs no body read.
    """
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.token is not None:
        app.add_middleware(BearerAuth, token=settings.token)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])


def add_security_scheme(app: FastAPI, enabled: bool) -> None:
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
