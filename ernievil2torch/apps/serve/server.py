"""``ernievil2 serve``: check the bind, load the model and gallery, run the app under uvicorn.

The bind is checked before anything is loaded, so a refused ``--host`` fails at once. The listening socket is bound
here (then handed to uvicorn), so ``--port 0`` picks a free port and the reported address is the real one: it
reaches the caller as a :class:`ServiceBanner` (the caller decides how to show it; the library prints nothing).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from ...constants import DEFAULT_MAX_LENGTH
from ...errors import ErnieViL2Error, InputError
from ...modeling.dtypes import torch_dtype
from ...pretrained import load_pretrained
from ...retrieval.backends import backend_factory
from ...runtime.distributed import check_device, pick_device
from ...storage.provenance import SYNTHETIC_NOTICE
from .gallery import Gallery
from .limits import ServeLimits
from .settings import ServiceSettings
from .security import LOOPBACK_HOST_NAMES, check_bind, is_loopback

#: Environment variable read for the token when ``--token`` is not given (keeps it out of ``ps`` listings).
TOKEN_ENV = "ERNIEVIL2_SERVE_TOKEN"


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for ``host:port``; ``port`` 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve --host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def service_url(host: str, port: int) -> str:
    """The service's base URL (IPv6 addresses in brackets), ending in ``/``."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@dataclass(frozen=True)
class ServiceBanner:
    """What a starting service reports once its socket is bound, before it answers requests.

    ``notices`` are the lines for the error stream (the synthetic-weights warning, then what is served);
    ``ready_line`` is the line for standard output that names the address (``serving on http://...``), the line
    scripts wait for.
    """

    url: str
    model_dir: str
    gallery_size: int
    search_backend: str
    device: str
    dtype: str
    token_required: bool
    synthetic_weights: bool

    @property
    def notices(self) -> List[str]:
        lines = [f"*** {SYNTHETIC_NOTICE}"] if self.synthetic_weights else []
        lines.append(f"gallery: {self.gallery_size} images ({self.search_backend} search), model {self.model_dir} "
                     f"on {self.device} ({self.dtype})" + ("; bearer token required" if self.token_required else ""))
        return lines

    @property
    def ready_line(self) -> str:
        return f"serving on {self.url}  (page: {self.url}, API docs: {self.url}docs)"

    def summary(self) -> str:
        return "\n".join(self.notices + [self.ready_line])


def _searchable(model_dir: str, gallery: Optional[str], images: Optional[str], faiss: Optional[bool], backend: str,
                db: Optional[str], uri: Optional[str], db_token: Optional[str], thumbnails: Optional[str],
                db_searches: int = 2):
    """The gallery (``embed`` output) or photo library (Milvus) the service searches; InputError for a wrong mix."""
    library = db if db is not None else uri
    if db is not None and uri is not None:
        raise InputError("give the photo library as --db PATH.db or --uri http://HOST:PORT, not both")
    if library is None:
        if gallery is None:
            raise InputError("missing GALLERY: give an embed output (GALLERY IMAGES) or a photo library (--db/--uri)")
        if images is None:
            raise InputError("missing IMAGES: the folder given to `ernievil2 embed` (gallery ids are paths in it)")
        return Gallery.load(gallery, images, use_faiss=faiss, backend=backend)
    if gallery is not None or images is not None:
        raise InputError("--db/--uri serve a photo library: GALLERY and IMAGES belong to the other form")
    from pathlib import Path

    from ...retrieval.milvus import check_uri, is_embedded
    from ..index.indexer import model_dim
    from .library import PhotoLibrary

    target = check_uri(library)
    if not Path(model_dir).is_dir():
        raise InputError(f"model {model_dir!r}: serving a photo library needs the model's directory (its hash is "
                         "checked against the index)")
    if thumbnails is None:
        thumbnails = (f"{target}.thumbs" if is_embedded(target)
                      else str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ernievil2torch" / "thumbs"))
    return PhotoLibrary.open(target, Path(model_dir), model_dim(Path(model_dir)), Path(thumbnails), db_token,
                             searches=db_searches)


def serve(model_dir: str, gallery: Optional[str] = None, images: Optional[str] = None, host: str = "127.0.0.1",
          port: int = 8000,
          token: Optional[str] = None, cors_origins: Sequence[str] = (), limits: Optional[ServeLimits] = None,
          max_batch: int = 32, max_wait_ms: float = 5.0, decode_workers: int = 2, dtype: str = "float32",
          device: Optional[str] = None, vocab: Optional[str] = None, faiss: Optional[bool] = None,
          max_length: int = DEFAULT_MAX_LENGTH, log_level: str = "info", backend: str = "memory",
          fast_decode: bool = False, db: Optional[str] = None, uri: Optional[str] = None,
          db_token: Optional[str] = None, thumbnails: Optional[str] = None, db_searches: int = 2,
          on_ready: Optional[Callable[[ServiceBanner], None]] = None) -> None:
    """Serve text->image and image->image search over an ``embed`` output until interrupted.

    ``backend`` names the search back end that holds the gallery (one of
    :data:`~ernievil2torch.retrieval.backends.BACKENDS`; ``faiss`` is an option of ``memory``). ``on_ready`` is
    called once with the :class:`ServiceBanner` when the socket is bound, before the first request is answered
    (the CLI prints it). Raises :class:`InputError` (before loading anything) for a non-loopback ``host`` without
    a token, for an unknown ``backend`` or ``device`` (``None``: the GPU when CUDA is available, else the CPU) and for a gallery that is not a valid ``embed`` output of images, and
    for a gallery the model cannot serve. See
    :class:`~.settings.ServiceSettings` and :class:`~.limits.ServeLimits`.

    Two forms: ``gallery`` + ``images`` (an ``embed`` output, exact search in memory), or a photo library that
    ``ernievil2 index`` keeps in Milvus: ``db`` (an embedded Milvus Lite folder; this process then owns it) or
    ``uri`` (a Milvus server, ``db_token`` its token), with thumbnails cached in ``thumbnails`` (default: the
    folder ``DB.thumbs`` beside an embedded database, else ``~/.cache/ernievil2torch/thumbs``). A library indexed
    with another model, or with no index yet, is refused before the model loads.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    backend_factory(backend)
    place = pick_device(device, local_rank=0)  # None -> the GPU when CUDA is available, as the help says
    try:
        check_device(str(place))
    except InputError as exc:
        raise InputError(f"device: {exc}") from None
    if max_batch < 1 or max_wait_ms < 0 or decode_workers < 1:
        raise InputError("max_batch and decode_workers must be positive and max_wait_ms not negative")
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ErnieViL2Error(f"`ernievil2 serve` needs fastapi, uvicorn, python-multipart and fastapi-offline ({exc}); "
                             "pip install 'ernievil2torch[serve]'") from exc
    from .engine import SearchEngine

    limits = limits or ServeLimits()
    searchable = _searchable(model_dir, gallery, images, faiss, backend, db, uri, db_token, thumbnails, db_searches)
    # (a bad gallery or library is refused above, before the model loads)
    pretrained = load_pretrained(model_dir, dtype=torch_dtype(dtype), device=place, vocab=vocab)
    engine = SearchEngine(pretrained, searchable, limits, max_length, fast_decode=fast_decode)
    settings = ServiceSettings(limits=limits, token=token, cors_origins=tuple(cors_origins),
                               allowed_hosts=tuple(sorted(LOOPBACK_HOST_NAMES)) if is_loopback(host) else None,
                               max_batch=max_batch, max_wait_ms=max_wait_ms, decode_workers=decode_workers)
    app = create_app(engine, settings)
    info = engine.describe()
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10, server_header=False)
    server = uvicorn.Server(config)
    with bind_socket(host, port) as sock:
        if on_ready is not None:
            on_ready(ServiceBanner(url=service_url(host, sock.getsockname()[1]), model_dir=str(model_dir),
                                   gallery_size=info["gallery_size"], search_backend=info["search_backend"],
                                   device=info["device"], dtype=info["dtype"], token_required=token is not None,
                                   synthetic_weights=info["synthetic_weights"]))
        server.run(sockets=[sock])
