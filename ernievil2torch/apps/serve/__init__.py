"""``ernievil2 serve``: text->image and image->image search over your own photos, as an HTTP API and a web page.

Modules, one job each: :mod:`.limits` (request bounds), :mod:`.security` (bind policy, token, Host names),
:mod:`.settings` (the service's settings), :mod:`.gallery` (an embed output in a search back end, over its image
root), :mod:`.batching` (micro-batcher), :mod:`.engine` (decode, encode, search; no HTTP), and the FastAPI parts:
:mod:`.schemas` (JSON bodies), :mod:`.inputs` (request checks), :mod:`.dependencies` (state and lifespan),
:mod:`.routes` (handlers and routers), :mod:`.error_handlers`, :mod:`.middleware`, :mod:`.app` (assembles them);
:mod:`.server` (uvicorn). Only the FastAPI parts and ``server.serve`` need the ``[serve]`` extra (fastapi,
uvicorn, python-multipart).
"""
from .gallery import Gallery, Hit, ImageLookupError, ImageRoot
from .limits import ServeLimits
from .security import check_bind, is_loopback
from .server import ServiceBanner, serve
from .settings import ServiceSettings

__all__ = ["Gallery", "Hit", "ImageLookupError", "ImageRoot", "ServeLimits", "ServiceBanner", "ServiceSettings",
           "check_bind", "is_loopback", "serve"]
