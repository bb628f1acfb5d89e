"""The service's state on ``app.state`` and the FastAPI dependencies that hand it to the handlers.

:func:`install_state` puts the engine, the settings, the two micro-batchers (texts, images) and the page on
``app.state``; :func:`lifespan` makes the thread pools (``app.state.executors``: one model thread that both
batchers share, so model calls never compete, a pool that decodes uploads, and a pool for the photo library's
blocking database calls) and starts and stops the batchers.
Pools are made per lifespan, so an app can be started again after a shutdown. Handlers never reach ``app.state``
themselves: they declare the dependencies below, so a test can call a handler with its own values.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib import resources
from typing import AsyncIterator

from fastapi import FastAPI, Request

from .batching import MicroBatcher
from .engine import SearchEngine
from .limits import ServeLimits
from .settings import ServiceSettings

#: Threads for the photo library's blocking database calls beyond ``--db_searches``: searches wait their turn inside
#: the library (:class:`~.library.PhotoLibrary`), and a thumbnail or a folder list must not wait for a thread behind
#: them (asyncio's default pool has min(32, CPUs + 4) threads: six on two cores, all of them could be waiting).
LIBRARY_THREADS = 16


def read_page(name: str = "index.html") -> str:
    """A file of the pages shipped inside the package: ``static/index.html`` (a gallery), ``static/library.html``
    (a photo library), or what both use (``page.css``, ``page.js``)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def install_state(app: FastAPI, engine: SearchEngine, settings: ServiceSettings) -> None:
    """Put what the handlers need on ``app.state`` (the batchers get their executor in :func:`lifespan`)."""
    wait_s = settings.max_wait_ms / 1000.0
    app.state.engine = engine
    app.state.settings = settings
    app.state.batchers = {"text": MicroBatcher(engine.text_batch, None, settings.max_batch, wait_s, name="text"),
                          "image": MicroBatcher(engine.image_batch, None, settings.max_batch, wait_s, name="image")}
    app.state.executors = {}
    app.state.page = read_page("library.html" if hasattr(getattr(engine, "gallery", None), "thumbnail") else "index.html")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make the pools, start the batchers; on shutdown stop the batchers and shut the pools down."""
    settings: ServiceSettings = app.state.settings
    batchers = app.state.batchers
    library = getattr(app.state.engine, "gallery", None)
    executors = {"model": ThreadPoolExecutor(1, thread_name_prefix="ernievil2-model"),
                 "decode": ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="ernievil2-decode"),
                 "library": ThreadPoolExecutor(LIBRARY_THREADS + getattr(library, "searches", 0),
                                               thread_name_prefix="ernievil2-library")}
    app.state.executors = executors
    for batcher in batchers.values():
        batcher.executor = executors["model"]
    await batchers["text"].start()
    await batchers["image"].start()
    try:
        yield
    finally:
        await batchers["text"].stop()
        await batchers["image"].stop()
        for pool in executors.values():
            pool.shutdown(wait=True, cancel_futures=True)


# ---- dependencies -----------------------------------------------------------------------------------------------
def get_engine(request: Request) -> SearchEngine:
    return request.app.state.engine


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def get_limits(request: Request) -> ServeLimits:
    return request.app.state.settings.limits


def get_text_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batchers["text"]


def get_image_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batchers["image"]


def get_decode_executor(request: Request) -> Executor:
    return request.app.state.executors["decode"]


def get_library_executor(request: Request) -> Executor:
    return request.app.state.executors["library"]


def get_page(request: Request) -> str:
    return request.app.state.page
