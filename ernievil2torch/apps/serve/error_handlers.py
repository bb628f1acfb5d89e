"""The app's exception handlers: every error leaves as JSON ``{"error": "..."}`` with the status that describes it,
never as a traceback.

* :func:`invalid_request`: 422 for parameters and bodies FastAPI rejects, one line naming each problem;
* :func:`http_error`: Starlette's HTTP errors (404, 405, 413 from the body limit, 400), in the service's shape;
* :func:`bad_input`: the project's :class:`~ernievil2torch.errors.InputError` s: 404/403 for an image lookup,
  413 for an image over the pixel limit, 422 otherwise;
* :func:`internal_error`: anything else, 500 with no detail (the server log has it).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...data.image_root import ImageLookupError
from ...errors import ImageTooLargeError, InputError
from .middleware import error_response

log = logging.getLogger("ernievil2torch.serve")


def validation_message(errors: Sequence[Dict[str, Any]]) -> str:
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


def input_error_status(exc: InputError) -> int:
    """The HTTP status of an :class:`InputError`: its own for an image lookup, 413 for too many pixels, else 422."""
    if isinstance(exc, ImageLookupError):
        return exc.status
    return 413 if isinstance(exc, ImageTooLargeError) else 422


async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = json.loads(json.dumps(exc.errors(), default=str))
    return JSONResponse({"error": validation_message(exc.errors()), "detail": detail}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        message = f"{message.lower()}: {request.method} {request.url.path}"
    elif exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's wording
        message = ("could not parse the request body: send UTF-8 JSON (/v1/embed/text) or multipart form data "
                   "(uploads)")
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def bad_input(_request: Request, exc: InputError) -> JSONResponse:
    return error_response(input_error_status(exc), str(exc))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error (the server log has the details)")


def install_error_handlers(app: FastAPI) -> None:
    """Register the four handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(InputError, bad_input)
    app.add_exception_handler(Exception, internal_error)
