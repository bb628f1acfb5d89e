"""``ernievil2 serve``: text->image and image->image search over your own photos, as an HTTP API and a web page.

Modules, one job each: :mod:`.limits` (request bounds), :mod:`.security` (bind policy, token, Host names),
:mod:`.gallery` (embeddings + safe image lookup), :mod:`.batching` (micro-batcher), :mod:`.engine` (decode, encode,
search; no HTTP), :mod:`.middleware` and :mod:`.app` (FastAPI), :mod:`.server` (uvicorn). Only ``middleware``,
``app`` and ``server.serve`` need the ``[serve]`` extra (fastapi, uvicorn, python-multipart).
"""
from .gallery import Gallery, Hit, ImageLookupError, ImageRoot
from .limits import ServeLimits
from .security import check_bind, is_loopback
from .server import serve

__all__ = ["Gallery", "Hit", "ImageLookupError", "ImageRoot", "ServeLimits", "check_bind", "is_loopback", "serve"]
