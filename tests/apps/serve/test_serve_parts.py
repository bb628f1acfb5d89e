"""The service's parts, each tested alone: handlers called as plain functions with their dependencies given,
the dependencies, the exception handlers, the request checks, the limit-bound parameters, the startup banner.

No model is loaded: a stand-in engine and batchers answer. The whole app is tested in ``test_serve.py``.
"""
from __future__ import annotations

import asyncio
import inspect
import io
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import List

import numpy as np
import pytest

from helpers import require_module

require_module("fastapi")
from fastapi import FastAPI, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from ernievil2torch.apps.serve import dependencies, error_handlers, routes  # noqa: E402
from ernievil2torch.apps.serve.app import create_app  # noqa: E402
from ernievil2torch.apps.serve.engine import Answer  # noqa: E402
from ernievil2torch.apps.serve.gallery import Hit  # noqa: E402
from ernievil2torch.apps.serve.inputs import check_text, decode_image_upload, upload_name  # noqa: E402
from ernievil2torch.apps.serve.limits import ServeLimits  # noqa: E402
from ernievil2torch.apps.serve.server import ServiceBanner, service_url  # noqa: E402
from ernievil2torch.apps.serve.settings import ServiceSettings  # noqa: E402
from ernievil2torch.data.image_root import ImageLookupError  # noqa: E402
from ernievil2torch.errors import ImageTooLargeError, InputError  # noqa: E402
from ernievil2torch.storage.provenance import SYNTHETIC_NOTICE  # noqa: E402


class FakeBatcher:
    """Answers each query with a fixed embedding and, when it asked for k results, k made-up hits."""

    def __init__(self) -> None:
        self.seen: List = []
        self.stats = SimpleNamespace(as_dict=lambda: {"batches": len(self.seen)})

    async def submit(self, queries):
        self.seen.append(queries)
        return [Answer(np.full(3, 0.5, np.float32), [Hit(r, f"img{r}.png", 1.0 - r / 10) for r in range(q.k)]
                       if q.k else None) for q in queries]


class FakeEngine:
    def __init__(self) -> None:
        self.decoded: List = []
        self.gallery = SimpleNamespace(image_file=self._image_file)

    def decode_upload(self, data: bytes, name: str) -> np.ndarray:
        self.decoded.append((data, name))
        if data == b"bad":
            raise InputError("image #0 (upload): not a recognised image format")
        return np.zeros((224, 224, 3), np.uint8)

    def describe(self) -> dict:
        return {"model": "m", "gallery_size": 2}

    def text_batch(self, queries):
        return [Answer(np.zeros(3, np.float32), [Hit(r, f"img{r}.png", 0.0) for r in range(q.k)]) for q in queries]

    image_batch = text_batch

    @staticmethod
    def _image_file(row: int):
        raise ImageLookupError(f"no gallery row {row}: rows are 0..1", 404)


def run(coroutine):
    return asyncio.run(coroutine)


def upload(data: bytes, filename: str = "a.png", content_type: str = "image/png") -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=filename, headers=Headers({"content-type": content_type}))


# ---- handlers as plain functions --------------------------------------------------------------------------------
def test_search_text_handler_alone():
    batcher = FakeBatcher()
    out = run(routes.search_text(q="一只猫", k=2, limits=ServeLimits(), batcher=batcher))
    assert out.query == "一只猫" and out.k == 2
    assert [(h.row, h.id, h.image_url) for h in out.results] == [(0, "img0.png", "/v1/images/0"),
                                                                  (1, "img1.png", "/v1/images/1")]
    assert batcher.seen[0][0].payload == "一只猫" and batcher.seen[0][0].k == 2
    with pytest.raises(InputError, match="q: empty text"):
        run(routes.search_text(q="  ", k=2, limits=ServeLimits(), batcher=batcher))
    with pytest.raises(InputError, match="q: 6 characters, more than the limit of 5"):
        run(routes.search_text(q="abcdef", k=2, limits=ServeLimits(max_text_chars=5), batcher=batcher))


def test_embed_text_handler_alone():
    batcher = FakeBatcher()
    out = run(routes.embed_text(routes.TextsIn(texts=["a", "b"]), limits=ServeLimits(), batcher=batcher))
    assert out.embeddings == [[0.5, 0.5, 0.5]] * 2 and [q.k for q in batcher.seen[0]] == [0, 0]
    with pytest.raises(InputError, match="give at least one text"):
        run(routes.embed_text(routes.TextsIn(texts=[]), limits=ServeLimits(), batcher=batcher))
    with pytest.raises(InputError, match="3 texts, more than the limit of 2"):
        run(routes.embed_text(routes.TextsIn(texts=["a"] * 3), limits=ServeLimits(max_texts=2), batcher=batcher))
    with pytest.raises(InputError, match=r"texts\[1\]: empty text"):
        run(routes.embed_text(routes.TextsIn(texts=["a", ""]), limits=ServeLimits(), batcher=batcher))


def test_image_handlers_alone():
    engine, batcher = FakeEngine(), FakeBatcher()
    with ThreadPoolExecutor(1) as pool:
        out = run(routes.search_image(file=upload(b"png"), k=1, engine=engine, decoder=pool, batcher=batcher))
        assert [h.row for h in out.results] == [0] and out.query is None
        out = run(routes.embed_image(files=[upload(b"x"), upload(b"y", "")], limits=ServeLimits(), engine=engine,
                                     decoder=pool, batcher=batcher))
        assert len(out.embeddings) == 2 and [name for _, name in engine.decoded[1:]] == ["files[0] 'a.png'",
                                                                                          "files[1]"]
        with pytest.raises(InputError, match="2 images, more than the limit of 1"):
            run(routes.embed_image(files=[upload(b"x")] * 2, limits=ServeLimits(max_files=1), engine=engine,
                                   decoder=pool, batcher=batcher))
        with pytest.raises(InputError, match=r"files\[0\] 'a.png' \(upload\): not a recognised image format"):
            run(routes.embed_image(files=[upload(b"bad")], limits=ServeLimits(), engine=engine, decoder=pool,
                                   batcher=batcher))
    with pytest.raises(ImageLookupError, match="no gallery row 7"):
        run(routes.gallery_image(row=7, engine=engine))


def test_healthz_handler_alone():
    engine, text, image = FakeEngine(), FakeBatcher(), FakeBatcher()
    request = SimpleNamespace(headers=Headers({}))
    status = run(routes.healthz(request, engine=engine, settings=ServiceSettings(), text_batcher=text,
                                image_batcher=image))
    assert status["status"] == "ok" and status["auth_required"] is False and status["gallery_size"] == 2
    assert status["limits"]["max_k"] == 1000 and status["batching"]["max_batch"] == 32
    guarded = ServiceSettings(token="t" * 16)
    status = run(routes.healthz(request, engine=engine, settings=guarded, text_batcher=text, image_batcher=image))
    assert status == {"status": "ok", "auth_required": True}
    request = SimpleNamespace(headers=Headers({"authorization": "Bearer " + "t" * 16}))
    status = run(routes.healthz(request, engine=engine, settings=guarded, text_batcher=text, image_batcher=image))
    assert status["gallery_size"] == 2


# ---- request checks -----------------------------------------------------------------------------------------------
def test_request_checks():
    assert upload_name(None, upload(b"", "cat.jpg")) == "file 'cat.jpg'"
    assert upload_name(3, upload(b"", "")) == "files[3]"
    assert check_text("猫", "q", ServeLimits()) == "猫"
    engine = FakeEngine()
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(InputError, match="file: content type 'text/plain' is not an image"):
            run(decode_image_upload(upload(b"x", content_type="text/plain"), "file", engine, pool))
        with pytest.raises(InputError, match="file: empty upload"):
            run(decode_image_upload(upload(b""), "file", engine, pool))
        crop = run(decode_image_upload(upload(b"x", content_type="application/octet-stream"), "file", engine, pool))
        assert crop.shape == (224, 224, 3)


# ---- dependencies and state ---------------------------------------------------------------------------------------
def test_dependencies_read_app_state_and_the_lifespan_makes_and_stops_the_pools():
    app = FastAPI()
    engine, settings = FakeEngine(), ServiceSettings(limits=ServeLimits(max_k=5), decode_workers=3)
    dependencies.install_state(app, engine, settings)
    request = SimpleNamespace(app=app)
    assert dependencies.get_engine(request) is engine and dependencies.get_settings(request) is settings
    assert dependencies.get_limits(request).max_k == 5
    assert dependencies.get_text_batcher(request).name == "text"
    assert dependencies.get_image_batcher(request).name == "image"
    assert "搜索" in dependencies.get_page(request)

    async def cycle():
        async with dependencies.lifespan(app):
            pool = dependencies.get_decode_executor(request)
            assert pool._max_workers == 3
            assert app.state.batchers["text"].executor is app.state.executors["model"]
        return pool

    pool = run(cycle())
    with pytest.raises(RuntimeError):
        pool.submit(print)  # shut down with the app
    assert run(cycle()) is not pool  # a restarted app gets fresh pools


# ---- exception handlers -------------------------------------------------------------------------------------------
def test_exception_handlers_alone():
    request = SimpleNamespace(method="GET", url=SimpleNamespace(path="/v1/x"))
    assert error_handlers.input_error_status(ImageLookupError("x", 403)) == 403
    assert error_handlers.input_error_status(ImageTooLargeError("x")) == 413
    assert error_handlers.input_error_status(InputError("x")) == 422
    response = run(error_handlers.bad_input(request, ImageLookupError("refused", 403)))
    assert response.status_code == 403 and json.loads(response.body) == {"error": "refused"}
    response = run(error_handlers.http_error(request, HTTPException(405, "Method Not Allowed")))
    assert json.loads(response.body) == {"error": "method not allowed: GET /v1/x"}
    response = run(error_handlers.http_error(request, HTTPException(413, "too big")))
    assert response.status_code == 413 and json.loads(response.body) == {"error": "too big"}
    response = run(error_handlers.internal_error(request, RuntimeError("secret detail")))
    assert response.status_code == 500 and b"secret" not in response.body
    errors = [{"loc": ("query", "k"), "msg": "Input should be greater than or equal to 1", "type": "x"},
              {"loc": ("body", 7), "type": "json_invalid", "ctx": {"error": "Expecting value"}}]
    assert error_handlers.validation_message(errors) == ("k: Input should be greater than or equal to 1; "
                                                         "malformed JSON body (at character 7): Expecting value")
    response = run(error_handlers.invalid_request(request, RequestValidationError(errors)))
    assert response.status_code == 422 and json.loads(response.body)["error"].startswith("k: Input")


# ---- limit-bound parameters ---------------------------------------------------------------------------------------
def test_limit_bound_parameters_are_declared_per_app():
    bounded = routes.with_limits(routes.search_text, ServeLimits(max_k=7, max_text_chars=33))
    parameters = inspect.signature(bounded).parameters
    assert parameters["k"].default.metadata and "limits" in parameters and bounded.__name__ == "search_text"
    assert run(bounded(q="猫", k=1, limits=ServeLimits(), batcher=FakeBatcher())).k == 1
    for limits in (ServeLimits(max_k=7, max_text_chars=33), ServeLimits()):
        app = create_app(FakeEngine(), ServiceSettings(limits=limits))
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            schema = client.get("/openapi.json").json()
            k, = [p for p in schema["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "k"]
            q, = [p for p in schema["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "q"]
            assert k["schema"]["maximum"] == limits.max_k and q["schema"]["maxLength"] == limits.max_text_chars
            # the gallery image route is documented as what it answers: 200 with an image, not JSON
            answers = schema["paths"]["/v1/images/{row}"]["get"]["responses"]
            assert list(answers["200"]["content"]) == ["image/*"] and "201" not in answers
            assert client.get(f"/v1/search?q=a&k={limits.max_k + 1}").status_code == 422
            assert client.get(f"/v1/search?q=a&k={limits.max_k}").json()["k"] == limits.max_k


# ---- the startup banner -------------------------------------------------------------------------------------------
def test_banner_reports_what_serve_printed():
    banner = ServiceBanner(url=service_url("::1", 8123), model_dir="MODEL", gallery_size=12, search_backend="torch",
                           device="cpu", dtype="float32", token_required=True, synthetic_weights=True)
    assert banner.url == "http://[::1]:8123/" and service_url("127.0.0.1", 80) == "http://127.0.0.1:80/"
    assert banner.notices == [f"*** {SYNTHETIC_NOTICE}",
                              "gallery: 12 images (torch search), model MODEL on cpu (float32); bearer token required"]
    assert banner.ready_line == ("serving on http://[::1]:8123/  (page: http://[::1]:8123/, API docs: "
                                 "http://[::1]:8123/docs)")
    assert banner.summary().splitlines() == banner.notices + [banner.ready_line]
    plain = ServiceBanner("http://127.0.0.1:1/", "M", 1, "faiss", "cuda:0", "bfloat16", False, False)
    assert plain.notices == ["gallery: 1 images (faiss search), model M on cuda:0 (bfloat16)"]


def test_serve_refuses_an_unknown_backend_before_loading_anything(tmp_path, monkeypatch):
    from ernievil2torch.apps.serve import server

    monkeypatch.setattr(server, "load_pretrained", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(InputError, match="unknown search back end 'qdrant'; known: memory, milvus"):
        server.serve(str(tmp_path), str(tmp_path), str(tmp_path), backend="qdrant")
