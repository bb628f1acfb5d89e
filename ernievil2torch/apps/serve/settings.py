"""How the service batches, bounds and guards requests: one frozen dataclass, free of any web framework."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .limits import ServeLimits
from .security import LOOPBACK_HOST_NAMES


@dataclass(frozen=True)
class ServiceSettings:
    """How the app batches, bounds and guards requests (see ``ernievil2 serve --help`` for each flag).

    ``allowed_hosts``: ``Host`` header names answered (None: any; :func:`~.app.create_app` is given the loopback
    set for a loopback bind). ``cors_origins``: origins allowed to call the API from other sites (none by default).
    """

    limits: ServeLimits = ServeLimits()
    token: Optional[str] = None
    allowed_hosts: Optional[Tuple[str, ...]] = tuple(sorted(LOOPBACK_HOST_NAMES))
    cors_origins: Tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 5.0
    decode_workers: int = 2
