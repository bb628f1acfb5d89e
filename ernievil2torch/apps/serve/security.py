"""Who may reach the service: loopback by default, a bearer token for anything else.

``ernievil2 serve`` binds 127.0.0.1 unless told otherwise. Binding any other address (``0.0.0.0``, a LAN address,
a host name) makes the API reachable from other machines, so it is refused unless a bearer token is set; the token
is then required on every ``/v1`` call. On a loopback bind the service also accepts only loopback names in the
``Host`` header, which stops DNS-rebinding pages from talking to it through the user's browser.
"""
from __future__ import annotations

import hmac
import ipaddress
from typing import FrozenSet, Optional, Sequence

from ...errors import InputError

#: The shortest bearer token accepted (a short one could be guessed).
MIN_TOKEN_LENGTH = 16
#: ``Host`` header names a loopback-bound service answers to (any port).
LOOPBACK_HOST_NAMES: FrozenSet[str] = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse (InputError, before anything is loaded) a non-loopback ``host`` without a token, a weak token, or one
    with characters a client cannot send in a header (anything but visible ASCII)."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InputError(f"--token must be at least {MIN_TOKEN_LENGTH} characters (e.g. `python -c \"import "
                         "secrets; print(secrets.token_urlsafe(24))\"`)")
    if token is not None and not all("!" <= char <= "~" for char in token):
        raise InputError("--token must be visible ASCII characters only (no spaces, no accents): an HTTP client "
                         "cannot send anything else in an Authorization header reliably")
    if not is_loopback(host) and not token:
        raise InputError(f"refusing to listen on {host}: that makes the API reachable from other machines. Pass "
                         "--token TOKEN (every API call must then send 'Authorization: Bearer TOKEN'), or keep "
                         "the default --host 127.0.0.1")


def host_allowed(host_header: str, allowed: Optional[FrozenSet[str]]) -> bool:
    """Whether a ``Host`` header (``name[:port]``) names an allowed host; ``allowed=None`` allows any."""
    if allowed is None:
        return True
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[:name.find("]") + 1] if "]" in name else name
    elif ":" in name:
        name = name.rsplit(":", 1)[0]
    return name in allowed


def token_matches(authorization: Optional[str], token: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` (scheme in any case, constant-time comparison of
    the whole token: an empty, shorter, longer or otherwise different one never matches)."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def request_authorized(authorizations: Sequence[str], token: str) -> bool:
    """Whether a request's ``Authorization`` headers (every one it sent, in order) carry the token: exactly one
    header, and it matches (:func:`token_matches`). Two or more are refused even if one matches: ``Authorization``
    is not a list header (RFC 9110), and a proxy in front could act on another one than we checked."""
    return len(authorizations) == 1 and token_matches(authorizations[0], token)
