"""ASGI middleware of the service, each one check, each refusal a JSON error that names the problem.

Order (outermost first, see :func:`.app.create_app`): CORS (only when asked for), :class:`SecurityHeaders`,
:class:`HostCheck`, :class:`BearerAuth`, :class:`BodyLimit`. So a refused request costs no body read.
"""
from __future__ import annotations

from typing import FrozenSet, Iterable, List, Optional, Tuple

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import host_allowed, request_authorized

#: Paths under this prefix are the API (token-protected when a token is set).
API_PREFIX = "/v1/"


def _header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _headers(scope: Scope, name: bytes) -> List[str]:
    """Every value of header ``name`` (lower case), in the order sent."""
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]


def error_response(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    """The service's one error shape: ``{"error": message}`` with the status."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class SecurityHeaders:
    """Adds ``nosniff``, no-referrer, no-framing and a same-origin content security policy to every response."""

    HEADERS: Tuple[Tuple[bytes, bytes], ...] = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-resource-policy", b"same-origin"),
    )
    #: The page's scripts and styles are inline in one file; images are same-origin or blob: URLs it makes.
    PAGE_CSP = (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; "
                b"style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; object-src 'none'; "
                b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope.get("path") == "/"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(self.HEADERS) + ([self.PAGE_CSP] if page else [])
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


class HostCheck:
    """Answers only requests whose ``Host`` header names an allowed host (400 otherwise); None allows all."""

    def __init__(self, app: ASGIApp, allowed: Optional[Iterable[str]] = None) -> None:
        self.app = app
        self.allowed: Optional[FrozenSet[str]] = None if allowed is None else frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not host_allowed(_header(scope, b"host") or "", self.allowed):
            return await error_response(400, "unexpected Host header: this service answers only to "
                                             + ", ".join(sorted(self.allowed or ())))(scope, receive, send)
        await self.app(scope, receive, send)


class BearerAuth:
    """Requires exactly one ``Authorization: Bearer <token>`` header on every API path (401 otherwise; a token in
    the query string does not count)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX) and scope.get("method") != "OPTIONS"
                and not request_authorized(_headers(scope, b"authorization"), self.token)):
            return await error_response(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
                                        {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, by ``Content-Length`` or while a chunked body streams in
    (the HTTPException raised from ``receive`` reaches the app's JSON error handler).

    Before answering, the rest of the refused body is read and thrown away, up to ``drain_factor`` x ``max_bytes``
    in all: a server that answers and closes while the client is still sending makes the kernel reset the
    connection, and the client (a browser, ``http.client``) then sees a network error instead of the 413. A body
    declared larger than that, or sent with ``Expect: 100-continue`` (the client waits for the go-ahead), is
    answered at once without reading it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_factor: int = 4) -> None:
        self.app, self.max_bytes, self.drain_bytes = app, max_bytes, drain_factor * max_bytes

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_bytes:,} bytes"

    async def _drain(self, receive: Receive, already: int) -> None:
        """Read and discard the body until its end, a disconnect, or ``drain_bytes`` read in all."""
        seen = already
        while seen <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        waits = (_header(scope, b"expect") or "").lower() == "100-continue"
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                return await error_response(400, "invalid Content-Length header")(scope, receive, send)
            if size > self.max_bytes:
                if size <= self.drain_bytes and not waits:
                    await self._drain(receive, 0)
                return await error_response(413, self._too_large())(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive, seen)
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)
