"""``ernievil2 serve``: the API through FastAPI's TestClient and a real uvicorn server, hostile requests, security.

A 2-layer model with the real input sizes serves a gallery of test images embedded by ``embed`` (the full-size
acceptance run is ``test_serve_fullsize.py``). Every hostile request must get a JSON 4xx naming the problem and
``/healthz`` must answer after each one; the TestClient re-raises any server exception, so a 5xx fails the test.
"""
from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from helpers import require_module, torch_threads
import torch

fastapi = require_module("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from ernievil2torch.storage.embeddings import read_embed_output  # noqa: E402
from ernievil2torch.retrieval.topk import search_embeddings  # noqa: E402
from ernievil2torch.apps.serve import Gallery, ImageRoot, ServeLimits, check_bind, is_loopback  # noqa: E402
from ernievil2torch.apps.serve.app import ServiceSettings, create_app  # noqa: E402
from ernievil2torch.apps.serve.batching import MicroBatcher  # noqa: E402
from ernievil2torch.apps.serve.engine import SearchEngine  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402
from ernievil2torch.pretrained import load_pretrained  # noqa: E402

from serve_helpers import (QUERIES, REPO, ServerProcess, console_command, embedded_gallery, png_bytes,  # noqa: E402
                           png_header_only, tiny_model_dir)

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny model, a gallery of test images and its ``embed`` output."""
    root = tmp_path_factory.mktemp("serve")
    model_dir = tiny_model_dir(root / "model")
    ids = embedded_gallery(root, model_dir)
    pretrained = load_pretrained(model_dir)
    engine = SearchEngine(pretrained, Gallery.load(root / "gallery", root / "images"))
    return {"root": root, "model": model_dir, "ids": ids, "pretrained": pretrained, "engine": engine}


@pytest.fixture(scope="module")
def client(site):
    with TestClient(create_app(site["engine"]), base_url=BASE) as test_client:
        yield test_client


def _upload(name: str, data: bytes, kind: str = "image/png"):
    return {"file": (name, data, kind)}


# ---- correctness --------------------------------------------------------------------------------------------------
def test_healthz_and_page(client, site):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["gallery_size"] == len(site["ids"]) and health["dim"] == 128
    assert health["synthetic_weights"] is True  # converted from a synthetic checkpoint: the page warns
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "搜索" in page.text and 'id="q"' in page.text and 'id="file"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/search", "/v1/search/image",
                                                                  "/v1/embed/text", "/v1/embed/image",
                                                                  "/v1/images/{row}", "/healthz"}


def test_the_page_font_and_the_api_docs_come_from_the_service(client):
    """No CDN anywhere: the page's Chinese font and Swagger UI's / ReDoc's files are served here, cacheable."""
    from ernievil2torch.apps.fonts import cjk_font_file

    font = client.get("/assets/cjk-font.otf")
    assert font.status_code == 200 and font.headers["content-type"] == "font/otf"
    assert font.content == cjk_font_file().read_bytes() and "immutable" in font.headers["cache-control"]
    assert "/assets/cjk-font.otf" in client.get("/assets/page.css").text
    page = client.get("/").text
    for asset, kind, needle in (("/assets/page.css", "text/css", "@font-face"),
                                ("/assets/page.js", "text/javascript", "function startPage(")):
        served = client.get(asset)
        assert asset in page and served.status_code == 200, asset
        assert served.headers["content-type"].startswith(kind) and needle in served.text, asset
    for page, assets in (("/docs", ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css")),
                         ("/redoc", ("/docs-assets/redoc.standalone.js",))):
        html = client.get(page).text
        assert "cdn." not in html and "fonts.googleapis" not in html, page
        for asset in assets:
            assert asset in html and client.get(asset).status_code == 200, asset


def test_the_page_font_is_a_json_404_when_its_package_is_missing(client, monkeypatch):
    from ernievil2torch.apps.serve import routes

    monkeypatch.setattr(routes, "cjk_font_file", lambda: None)
    response = client.get("/assets/cjk-font.otf")
    assert response.status_code == 404 and "pip install pylopdf-fonts-zh-cn" in response.json()["error"]


def test_text_search_is_exact_topk_of_its_embedding(client, site):
    gallery, ids = (output := read_embed_output(site["root"] / "gallery")).embeddings, output.ids
    normalized = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    model, tokenizer = site["pretrained"].model, site["pretrained"].tokenizer
    for q in QUERIES:
        emb = np.asarray(client.post("/v1/embed/text", json={"texts": [q]}).json()["embeddings"], np.float32)
        batch = tokenizer([q])
        with torch.no_grad():
            direct = model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True).numpy()
        assert np.abs(emb - direct).max() < 1e-5
        for k in (1, 5, len(ids), 1000):
            got = client.get("/v1/search", params={"q": q, "k": k}).json()
            scores, rows = search_embeddings(emb, normalized, k=k)
            assert [r["row"] for r in got["results"]] == rows[0].tolist()
            assert [r["id"] for r in got["results"]] == [ids[i] for i in rows[0]]
            assert np.allclose([r["score"] for r in got["results"]], scores[0], atol=1e-6)
            assert all(r["image_url"] == f"/v1/images/{r['row']}" for r in got["results"])


def test_image_search_returns_the_query_image_first(client, site):
    for row, image_id in enumerate(site["ids"]):
        data = (site["root"] / "images" / image_id).read_bytes()
        got = client.post("/v1/search/image", params={"k": 3}, files=_upload(Path(image_id).name, data)).json()
        assert got["results"][0]["row"] == row and got["results"][0]["id"] == image_id
        assert got["results"][0]["score"] > 0.99999


def test_embed_image_equals_the_gallery_rows(client, site):
    gallery, ids = (output := read_embed_output(site["root"] / "gallery")).embeddings, output.ids
    files = [("files", (i, (site["root"] / "images" / i).read_bytes(), "image/jpeg")) for i in ids[:4]]
    got = np.asarray(client.post("/v1/embed/image", files=files).json()["embeddings"], np.float32)
    expected = gallery[:4] / np.linalg.norm(gallery[:4], axis=1, keepdims=True)
    assert got.shape == (4, 128) and np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_gallery_image_is_the_file(client, site):
    for row in (0, len(site["ids"]) - 1):
        response = client.get(f"/v1/images/{row}")
        assert response.status_code == 200
        assert response.content == (site["root"] / "images" / site["ids"][row]).read_bytes()
        assert response.headers["content-type"].startswith("image/")
        assert response.headers["x-content-type-options"] == "nosniff"


# ---- hostile requests ---------------------------------------------------------------------------------------------
TRAVERSALS = ("..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%252e%252e%252fetc%252fpasswd",
              "..%5c..%5cwindows%5cwin.ini", "....//....//etc/passwd", "0%00", "0/../../../../etc/passwd",
              "%c0%ae%c0%ae%2fetc%2fpasswd", "~root", "%2fetc%2fpasswd")
ROWS = ("-1", "-0x1", "12345678901234567890", "9" * 5000, "abc", "1.5", "1e3", "0x10", "1 2", "")
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def _bad_uploads():
    good = png_bytes()
    jpeg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 64), "blue").save(jpeg, "JPEG")
    return [
        ("empty file", _upload("a.png", b""), 422, "empty"),
        ("text as png", _upload("a.png", b"hello, not an image"), 422, "not a recognised image format"),
        ("declared text/plain", _upload("a.txt", good, "text/plain"), 422, "not an image"),
        ("declared text/html", _upload("a.html", b"<script>alert(1)</script>", "text/html"), 422, "not an image"),
        ("truncated png", _upload("a.png", good[: len(good) // 2]), 422, "truncated"),
        ("truncated jpeg", _upload("a.jpg", jpeg.getvalue()[:200], "image/jpeg"), 422, "truncated"),
        ("png signature only", _upload("a.png", good[:8]), 422, "image"),
        ("eps (ghostscript plugin)", _upload("a.eps", EPS, "image/x-eps"), 422, "not a recognised image format"),
        ("svg", _upload("a.svg", SVG, "image/svg+xml"), 422, "not a recognised image format"),
        ("pdf", _upload("a.pdf", PDF, "application/octet-stream"), 422, "not a recognised image format"),
        ("decompression bomb 30000x30000 (Pillow's guard)", _upload("bomb.png", png_header_only(30000, 30000)),
         413, "decompression bomb"),
        ("8000x6000 header, over --max_pixels", _upload("big.png", png_header_only(8000, 6000)), 413,
         "more than the limit of 40,000,000"),
        ("wide bomb 400000x200", _upload("bomb.png", png_header_only(400_000, 200)), 413, "more than the limit"),
        ("wrong field name", {"files": ("a.png", good, "image/png")}, 422, "file: Field required"),
        ("no file at all", None, 422, "file"),
    ]


def _hostile_requests():
    """(name, method, url, request kwargs, expected status, text expected in the error)."""
    out = []
    for t in TRAVERSALS:
        out.append((f"traversal {t}", "GET", f"/v1/images/{t}", {}, (404, 422), ""))
    for r in ROWS:
        expected = (404,) if r.lstrip("-").isdigit() and len(r) < 4300 else (404, 422)
        out.append((f"row {r!r}" if len(r) <= 20 else f"row {len(r):,} digits", "GET", f"/v1/images/{r}", {},
                    expected, ""))
    for name, files, status, text in _bad_uploads():
        kwargs = {"files": files} if files else {"data": {"k": "3"}}
        out.append((f"upload: {name}", "POST", "/v1/search/image?k=3", kwargs, (status,), text))
    out += [
        ("embed/image 17 files", "POST", "/v1/embed/image",
         {"files": [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(17)]}, (422,), "limit of 16"),
        ("embed/image one bad file of two", "POST", "/v1/embed/image",
         {"files": [("files", ("ok.png", png_bytes(), "image/png")), ("files", ("bad.png", b"junk", "image/png"))]},
         (422,), "files[1] 'bad.png'"),
        ("missing q", "GET", "/v1/search", {}, (422,), "q: Field required"),
        ("empty q", "GET", "/v1/search?q=", {}, (422,), "q"),
        ("blank q", "GET", "/v1/search?q=%20%20%E3%80%80", {}, (422,), "q: empty text"),
        ("q too long", "GET", "/v1/search?q=" + "猫" * 1001, {}, (422,), "q"),
        ("k=0", "GET", "/v1/search?q=猫&k=0", {}, (422,), "k"),
        ("k=-5", "GET", "/v1/search?q=猫&k=-5", {}, (422,), "k"),
        ("k=1001", "GET", "/v1/search?q=猫&k=1001", {}, (422,), "k"),
        ("k=abc", "GET", "/v1/search?q=猫&k=abc", {}, (422,), "k"),
        ("k=1e3", "GET", "/v1/search?q=猫&k=1e3", {}, (422,), "k"),
        ("k on image search 0", "POST", "/v1/search/image?k=0", {"files": _upload("a.png", png_bytes())}, (422,),
         "k"),
    ]
    text = "/v1/embed/text"
    json_type = {"content-type": "application/json"}
    for name, body, status, message in [
        ("malformed JSON", b'{"texts": ["a",', 422, "malformed JSON"),
        ("not JSON at all", b"texts=a", 422, "malformed JSON"),
        ("invalid UTF-8", b'{"texts": ["\xff\xfe"]}', (400, 422), "request body"),
        ("a bare list", b'["a"]', 422, "request body"),
        ("texts a string", '{"texts": "一只猫"}'.encode(), 422, "texts"),
        ("texts numbers", b'{"texts": [1, 2]}', 422, "texts.0"),
        ("texts null item", b'{"texts": [null]}', 422, "texts.0"),
        ("texts nested", b'{"texts": [["a"]]}', 422, "texts.0"),
        ("texts empty", b'{"texts": []}', 422, "at least one"),
        ("texts empty string", b'{"texts": [""]}', 422, "texts[0]: empty text"),
        ("texts 65 items", json.dumps({"texts": ["a"] * 65}).encode(), 422, "limit of 64"),
        ("text too long", json.dumps({"texts": ["a" * 1001]}).encode(), 422, "limit of 1000"),
        ("unknown field", b'{"texts": ["a"], "extra": 1}', 422, "extra"),
        ("no texts field", b'{"other": 1}', 422, "texts"),
        ("deeply nested", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", (400, 422), ""),
        ("empty body", b"", 422, ""),
    ]:
        out.append((f"embed/text: {name}", "POST", text, {"content": body, "headers": json_type},
                    status if isinstance(status, tuple) else (status,), message))
    out += [
        ("embed/text as text/plain", "POST", text, {"content": b'{"texts": ["a"]}',
                                                    "headers": {"content-type": "text/plain"}}, (422,), ""),
        ("POST on search", "POST", "/v1/search?q=猫", {}, (405,), "method not allowed"),
        ("unknown route", "GET", "/v1/nothing", {}, (404,), "not found"),
        ("static file escape", "GET", "/static/../../pyproject.toml", {}, (404,), ""),
        ("foreign Host header", "GET", "/v1/search?q=猫", {"headers": {"host": "evil.example"}}, (400,), "Host"),
    ]
    return out


HOSTILE = _hostile_requests()

#: The hostile requests by kind, for RELIABILITY.md's table: (label, which case names belong to it).
HOSTILE_KINDS = (
    ("path traversal in the image route", lambda name: name.startswith("traversal ")),
    ("rows that are not gallery rows", lambda name: name.startswith("row ")),
    ("image uploads that are not acceptable images", lambda name: name.startswith("upload: ")),
    ("`/v1/embed/image` uploads", lambda name: name.startswith("embed/image")),
    ("search parameters", lambda name: name.endswith(" q") or name.startswith(("q ", "k"))),
    ("`/v1/embed/text` bodies", lambda name: name.startswith("embed/text")),
    ("routes, methods and headers", lambda name: name in ("POST on search", "unknown route", "static file escape",
                                                          "foreign Host header")),
)
HOSTILE_BEGIN = "<!-- hostile requests: rendered from tests/apps/serve/test_serve.py HOSTILE; python tests/test_docs.py --write -->"
HOSTILE_END = "<!-- end of hostile requests -->"


def _case_label(name: str) -> str:
    """A hostile case's name without its kind's prefix, safe inside a markdown code span in a table."""
    for prefix in ("traversal ", "row ", "upload: ", "embed/image ", "embed/text: ", "embed/text "):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name.replace("|", "/").replace("`", "'")


def hostile_table() -> str:
    """RELIABILITY.md's block listing every case of :data:`HOSTILE` by kind, with the statuses it may get."""
    lines = [HOSTILE_BEGIN, f"`tests/apps/serve/test_serve.py` sends **{len(HOSTILE)} hostile requests** through the app:", "",
             "| kind | cases | count | status |", "|---|---|---|---|"]
    placed = 0
    for label, belongs in HOSTILE_KINDS:
        cases = [h for h in HOSTILE if belongs(h[0])]
        placed += len(cases)
        names = ", ".join(f"`{_case_label(h[0])}`" for h in cases)
        statuses = " or ".join(str(s) for s in sorted({s for h in cases for s in h[4]}))
        lines.append(f"| {label} | {names} | {len(cases)} | {statuses} |")
    if placed != len(HOSTILE):
        raise AssertionError(f"HOSTILE_KINDS places {placed} of {len(HOSTILE)} hostile requests")
    return "\n".join(lines + [HOSTILE_END])


@pytest.mark.parametrize("name,method,url,kwargs,statuses,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_gets_a_json_4xx_and_the_service_keeps_serving(client, name, method, url, kwargs,
                                                                       statuses, message):
    response = client.request(method, url, **kwargs)
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert message in body["error"], body["error"]
    assert "Traceback" not in response.text and "root:" not in response.text
    assert client.get("/healthz").status_code == 200


def test_the_app_starts_again_after_a_shutdown(site):
    app = create_app(site["engine"])
    for _ in range(2):
        with TestClient(app, base_url=BASE) as test_client:
            assert test_client.get("/v1/search?q=%E7%8C%AB&k=1").status_code == 200
            assert test_client.post("/v1/search/image", files=_upload("a.png", png_bytes())).status_code == 200


def test_decompression_bomb_guard_of_pillow_kept_when_the_pixel_limit_is_raised(site):
    """--max_pixels above Pillow's limit: Pillow's own guard still refuses the bomb (it is never lifted)."""
    app = create_app(site["engine"], ServiceSettings(limits=ServeLimits(max_pixels=10 ** 12)))
    with TestClient(app, base_url=BASE) as test_client:
        response = test_client.post("/v1/search/image", files=_upload("bomb.png", png_header_only(30000, 30000)))
        assert response.status_code == 413 and "decompression bomb" in response.json()["error"]
        assert test_client.get("/healthz").status_code == 200


def test_oversized_upload_gets_413_before_and_while_reading(site):
    app = create_app(site["engine"], ServiceSettings(limits=ServeLimits(max_body_bytes=100_000)))
    big = np.random.default_rng(0).integers(0, 256, 150_000, dtype=np.uint8).tobytes()
    with TestClient(app, base_url=BASE) as test_client:
        response = test_client.post("/v1/search/image", files=_upload("big.png", big))
        assert response.status_code == 413 and "limit is 100,000 bytes" in response.json()["error"]

        def chunks():  # no Content-Length: the limit applies while the body streams in
            for start in range(0, len(big), 8192):
                yield big[start:start + 8192]
        response = test_client.post("/v1/embed/text", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413 and "too large" in response.json()["error"]
        assert test_client.post("/v1/search/image", files=_upload("ok.png", png_bytes())).status_code == 200


# ---- files only from the gallery ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tricky_gallery(site, tmp_path_factory):
    """A gallery whose ids try every way out of the image root (and a few honest ones)."""
    base = tmp_path_factory.mktemp("tricky")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(color=(1, 2, 3)))
    (root / "ok.png").write_bytes(png_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / "link_out.png").symlink_to(outside / "secret.png")
    (root / "link_in.png").symlink_to(root / "ok.png")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "loop.png").symlink_to(root / "loop.png")
    cases = {"ok.png": 200, "link_in.png": 200, "sub/../ok.png": 200, "../outside/secret.png": 403,
             "/etc/passwd": 403, str(outside / "secret.png"): 403, "link_out.png": 403, "dirlink/secret.png": 403,
             "missing.png": 404, "notes.txt": 404, "sub": 404, "loop.png": 404, "a\x00b.png": 403}
    ids = list(cases)
    rng = np.random.default_rng(1)
    gallery = Gallery.from_embeddings(rng.standard_normal((len(ids), 128)).astype(np.float32), ids, ImageRoot(root))
    engine = SearchEngine(site["pretrained"], gallery)
    return engine, cases


def test_only_files_inside_the_image_root_are_served(tricky_gallery):
    engine, cases = tricky_gallery
    with TestClient(create_app(engine), base_url=BASE) as test_client:
        for row, (image_id, status) in enumerate(cases.items()):
            response = test_client.get(f"/v1/images/{row}")
            assert response.status_code == status, (image_id, response.text)
            if status == 200:
                assert response.content == png_bytes()
            else:
                assert response.content != png_bytes(color=(1, 2, 3))
                assert "error" in response.json()


# ---- security settings ----------------------------------------------------------------------------------------------
def test_bind_policy():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host
        with pytest.raises(InputError, match="refusing to listen"):
            check_bind(host, None)
        check_bind(host, "x" * 16)
    with pytest.raises(InputError, match="at least 16 characters"):
        check_bind("0.0.0.0", "short")


def test_token_is_required_on_every_api_call(site):
    token = "s3cret-token-for-tests"
    app = create_app(site["engine"], ServiceSettings(token=token, allowed_hosts=None))
    good = {"Authorization": f"Bearer {token}"}
    with TestClient(app, base_url="http://photos.lan:8000") as test_client:
        calls = [("GET", "/v1/search?q=猫", {}), ("GET", "/v1/images/0", {}),
                 ("POST", "/v1/embed/text", {"json": {"texts": ["猫"]}}),
                 ("POST", "/v1/search/image", {"files": _upload("a.png", png_bytes())}),
                 ("POST", "/v1/embed/image", {"files": [("files", ("a.png", png_bytes(), "image/png"))]}),
                 ("GET", "/v1/unknown", {})]
        for method, url, kwargs in calls:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": token},
                            {"Authorization": f"Basic {token}"}):
                response = test_client.request(method, url, headers=headers, **kwargs)
                assert response.status_code == 401, (url, headers)
                assert response.headers["www-authenticate"] == "Bearer" and "bearer token" in response.json()["error"]
            response = test_client.request(method, url, headers=good, **kwargs)
            assert response.status_code == (404 if url == "/v1/unknown" else 200), (url, response.text)
        public = test_client.get("/healthz").json()
        assert public == {"status": "ok", "auth_required": True}
        assert test_client.get("/healthz", headers=good).json()["gallery_size"] == len(site["ids"])
        for public_path in ("/", "/docs", "/docs-assets/swagger-ui.css", "/assets/cjk-font.otf"):
            assert test_client.get(public_path).status_code == 200, public_path
        schema = test_client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        big = np.zeros(30 * 1024 * 1024, np.uint8).tobytes()  # refused for the token before any body limit
        assert test_client.post("/v1/search/image", content=big).status_code == 401


def test_no_cors_unless_asked(site):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(site["engine"]), base_url=BASE) as test_client:
        response = test_client.options("/v1/search", headers=preflight)
        assert "access-control-allow-origin" not in response.headers and response.status_code in (400, 405)
        response = test_client.get("/v1/search?q=猫", headers={"Origin": "https://evil.example"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    app = create_app(site["engine"], ServiceSettings(cors_origins=("https://photos.example",)))
    with TestClient(app, base_url=BASE) as test_client:
        allowed = dict(preflight, Origin="https://photos.example")
        response = test_client.options("/v1/search", headers=allowed)
        assert response.headers["access-control-allow-origin"] == "https://photos.example"
        response = test_client.options("/v1/search", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        response = test_client.get("/v1/search?q=猫", headers={"Origin": "https://photos.example"})
        assert response.headers["access-control-allow-origin"] == "https://photos.example"


def test_host_header_check_only_on_loopback_binds(site):
    with TestClient(create_app(site["engine"]), base_url="http://localhost:9") as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert test_client.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200
        for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80", ""):
            response = test_client.get("/healthz", headers={"host": host})
            assert response.status_code == 400 and "Host" in response.json()["error"], host


# ---- micro-batching -----------------------------------------------------------------------------------------------
def test_micro_batcher_batches_bounds_and_propagates_errors():
    seen = []
    threads = set()

    def run(items):
        threads.add(threading.get_ident())
        seen.append(list(items))
        time.sleep(0.02)
        if "boom" in items:
            raise ValueError("boom")
        return [item * 2 for item in items]

    async def scenario():
        loop_thread = threading.get_ident()
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=4, max_wait_s=0.05)
            await batcher.start()
            results = await asyncio.gather(*[batcher.submit([f"{i}"]) for i in range(10)])
            assert results == [[f"{i}" * 2] for i in range(10)]
            assert max(len(b) for b in seen) == 4 and sum(len(b) for b in seen) == 10 and len(seen) <= 4
            multi = await batcher.submit(["a", "b", "c", "d", "e", "f"])  # split over batches, order kept
            assert multi == ["aa", "bb", "cc", "dd", "ee", "ff"]
            outcome = await asyncio.gather(batcher.submit(["x"]), batcher.submit(["boom"]), return_exceptions=True)
            assert all(isinstance(o, ValueError) for o in outcome)  # same batch: both callers get the error
            assert await batcher.submit(["y"]) == ["yy"]  # and the batcher keeps going
            await batcher.stop()
        assert loop_thread not in threads  # the work ran off the event loop

    asyncio.run(scenario())
    assert len(threads) == 1


@pytest.fixture(scope="module")
def live_server(site):
    """The app under a real uvicorn server on 127.0.0.1 (port 0), in a thread."""
    import uvicorn

    app = create_app(site["engine"], ServiceSettings(limits=ServeLimits(max_body_bytes=200_000), max_wait_ms=20))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def test_concurrent_searches_share_model_calls_and_match_single_requests(live_server):
    url, app = live_server
    queries = [QUERIES[i % len(QUERIES)] + str(i % 7) for i in range(32)]
    single = {q: _get_json(f"{url}/v1/search?k=5&q={urllib.parse.quote(q)}") for q in set(queries)}
    before = _get_json(f"{url}/healthz")["batching"]["text"]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda q: _get_json(f"{url}/v1/search?k=5&q={urllib.parse.quote(q)}"), queries))
    for q, got in zip(queries, results):
        assert [r["row"] for r in got["results"]] == [r["row"] for r in single[q]["results"]]
        assert np.allclose([r["score"] for r in got["results"]], [r["score"] for r in single[q]["results"]],
                           atol=1e-5)
    after = _get_json(f"{url}/healthz")["batching"]["text"]
    assert after["items"] - before["items"] == len(queries)
    assert after["batches"] - before["batches"] < len(queries)  # some requests shared a model call
    assert after["largest_batch"] > 1


SLOW_MODEL_CALL_S = 1.5
RESPONSIVE_WITHIN_S = 0.75  # /healthz and a gallery image must answer within this while a model call runs


def test_event_loop_keeps_answering_while_the_model_computes(live_server, site, monkeypatch):
    url, app = live_server
    batcher = app.state.batchers["text"]
    original = batcher.run_batch

    def slow(items):
        time.sleep(SLOW_MODEL_CALL_S)
        return original(items)

    monkeypatch.setattr(batcher, "run_batch", slow)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_get_json, f"{url}/v1/search?q=%E7%8C%AB&k=3")
        time.sleep(0.3)
        start = time.perf_counter()
        assert _get_json(f"{url}/healthz")["status"] == "ok"
        with urllib.request.urlopen(f"{url}/v1/images/0", timeout=30) as response:  # file routes answer too
            assert response.status == 200 and response.read()
        took = time.perf_counter() - start
        assert not pending.done()
        assert len(pending.result(timeout=30)["results"]) == 3
    assert took < RESPONSIVE_WITHIN_S, f"/healthz took {took:.2f} s while a model call was running"


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk


RAW_TRAVERSALS = ("/v1/images/../../../../etc/passwd", "/v1/images/..%2f..%2f..%2fetc%2fpasswd",
                  "/v1/images/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                  "/v1/images/0/..%5c..%5cetc%5cpasswd", "http://127.0.0.1/../../etc/passwd",
                  "/v1/images/0;/../../etc/passwd", "/v1/images/%00", "/../pyproject.toml")


@pytest.mark.parametrize("target", RAW_TRAVERSALS)
def test_raw_path_traversals_on_a_real_server(live_server, target):
    url, _ = live_server
    reply = _raw(url, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]
    assert b"root:" not in reply and b"[project]" not in reply
    assert _get_json(f"{url}/healthz")["status"] == "ok"


def test_chunked_oversized_upload_on_a_real_server(live_server):
    url, _ = live_server
    boundary = "xXx"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * 400_000 + f"\r\n--{boundary}--\r\n".encode()
    chunks = b"".join(f"{len(body[i:i + 65536]):x}\r\n".encode() + body[i:i + 65536] + b"\r\n"
                      for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    head = (f"POST /v1/search/image?k=3 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n").encode()
    reply = _raw(url, head + chunks)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b'"error":"request body too large' in reply
    assert _get_json(f"{url}/healthz")["status"] == "ok"


def test_declared_oversized_body_gets_a_readable_413_on_a_real_server(live_server):
    """The refused body is drained before answering, so the client reads the 413 instead of a reset; with
    ``Expect: 100-continue`` the answer comes at once and no body is sent."""
    url, _ = live_server
    body = b"\0" * 300_000
    head = (f"POST /v1/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n\r\n").encode()
    reply = _raw(url, head + body)
    assert reply.startswith(b"HTTP/1.1 413") and b"request body too large" in reply, reply[:200]
    head = (f"POST /v1/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\nContent-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n\r\n")
    reply = _raw(url, head.encode())
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert _get_json(f"{url}/healthz")["status"] == "ok"


# ---- the command ----------------------------------------------------------------------------------------------------
def test_serve_refuses_a_public_host_without_a_token(site):
    root = site["root"]
    for extra in (["--host", "0.0.0.0"], ["--host", "::"], ["--host", "0.0.0.0", "--token", "short"]):
        start = time.perf_counter()
        proc = subprocess.run(console_command("serve", str(site["model"]), "--gallery", str(root / "gallery"),
                                              "--images", str(root / "images"), "--port", "0", *extra),
                              capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                                "ERNIEVIL2_SERVE_TOKEN": ""})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
        assert ("refusing to listen" in proc.stderr) or ("at least 16 characters" in proc.stderr)
        assert "serving on" not in proc.stdout and time.perf_counter() - start < 60


def test_serve_explains_a_bad_gallery_or_image_root(site, tmp_path):
    root = site["root"]
    for gallery, images, message in ((tmp_path, root / "images", "is not an `ernievil2 embed` output"),
                                     (root / "gallery", tmp_path / "missing", "is not a folder")):
        proc = subprocess.run(console_command("serve", str(site["model"]), "--gallery", str(gallery), "--images",
                                              str(images), "--port", "0"), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_serve_refuses_text_embeddings_as_a_gallery_before_loading_the_model(site, tmp_path, monkeypatch):
    from ernievil2torch.apps.serve import server

    text = tmp_path / "text_gallery"
    shutil.copytree(site["root"] / "gallery", text)
    manifest = json.loads((text / "manifest.json").read_text(encoding="utf-8"))
    (text / "manifest.json").write_text(json.dumps({**manifest, "kind": "text"}), encoding="utf-8")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the gallery was checked")

    monkeypatch.setattr(server, "load_pretrained", no_model)
    with pytest.raises(InputError, match="holds text embeddings .* image embeddings are needed"):
        server.serve(str(site["model"]), str(text), str(site["root"] / "images"))


def _non_loopback_addresses():
    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_serve_listens_on_loopback_only_by_default(site):
    import psutil

    root = site["root"]
    args = [str(site["model"]), "--gallery", str(root / "gallery"), "--images", str(root / "images"), "--port", "0",
            "--log_level", "warning"]
    with ServerProcess(args) as server:
        assert server.url.startswith("http://127.0.0.1:")
        listening = [c for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        assert {c.laddr.port for c in listening} == {server.port}
        for address in _non_loopback_addresses():
            with pytest.raises(OSError):
                socket.create_connection((address, server.port), timeout=2).close()
        got = _get_json(server.url + "v1/search?q=%E7%8C%AB&k=2")
        assert len(got["results"]) == 2
        assert server.stop() == 130  # Ctrl-C: uvicorn shuts down gracefully, then the usual exit status
    assert "stopped (the service writes no files)" in server.text and "Traceback" not in server.text


def test_serve_on_all_interfaces_with_a_token(site):
    import psutil

    root = site["root"]
    token = "a-long-enough-test-token"
    args = [str(site["model"]), "--gallery", str(root / "gallery"), "--images", str(root / "images"), "--port", "0",
            "--host", "0.0.0.0", "--log_level", "warning"]
    with ServerProcess(args, env={"ERNIEVIL2_SERVE_TOKEN": token}) as server:
        listening = [c for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert {c.laddr.ip for c in listening} == {"0.0.0.0"}
        local = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(local + "v1/search?q=%E7%8C%AB", timeout=30)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(local + "v1/search?q=%E7%8C%AB&k=1",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.loads(response.read())["results"]) == 1
    assert "bearer token required" in server.text


def test_page_ships_in_the_wheel_and_is_found_from_an_installed_package(tmp_path):
    source = tmp_path / "source"  # build from a copy: the build leaves nothing in the work tree
    shutil.copytree(REPO / "ernievil2torch", source / "ernievil2torch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel = next((tmp_path / "dist").glob("ernievil2torch-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert {f"ernievil2torch/apps/serve/static/{name}" for name in ("index.html", "library.html", "page.css",
                                                                        "page.js")} <= set(archive.namelist())
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import ernievil2torch.apps.serve.app as app; "
             "from importlib import resources; print(app.__file__); "
             "print(resources.files('ernievil2torch.apps.serve').joinpath('static', 'index.html').read_text()[:200])")
    proc = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, rest = proc.stdout.split("\n", 1)
    assert first.startswith(str(target)) and "<!doctype html>" in rest


def test_serve_device_defaults_to_the_gpu_when_cuda_is_available_and_is_checked_before_loading(site, monkeypatch):
    """The help promises `--device` defaults to cuda when available; a device this machine lacks is refused first."""
    import torch

    from ernievil2torch.apps.serve import server

    placed = []

    def capture(*args, device=None, **kwargs):
        placed.append(device)
        raise RuntimeError("stop after the device was chosen")

    monkeypatch.setattr(server, "load_pretrained", capture)
    args = (str(site["model"]), str(site["root"] / "gallery"), str(site["root"] / "images"))
    with pytest.raises(RuntimeError, match="stop after"):
        server.serve(*args)
    assert placed[-1] == torch.device("cuda", 0) if torch.cuda.is_available() else placed[-1] == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setattr(server.Gallery, "load", lambda *a, **k: pytest.fail("gallery loaded before the device check"))
        with pytest.raises(InputError, match="device: cuda:0 was asked for but torch sees no CUDA GPU"):
            server.serve(*args, device="cuda")


def test_fast_decode_reaches_the_uploads_and_the_service(site, monkeypatch):
    """serve --fast_decode: uploaded JPEGs are decoded at a reduced scale; without it, the official pipeline."""
    import io

    from PIL import Image as PILImage

    from ernievil2torch.apps.serve import server
    from ernievil2torch.processing import ErnieViL2ImageProcessor

    y, x = np.mgrid[0:900, 0:1200].astype(np.float32)
    photo = np.stack([128 + 100 * np.sin(x / (50 + 30 * c)) * np.cos(y / 70) for c in range(3)], -1).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(photo).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    size = site["pretrained"].model.config.vision.image_size
    fast = SearchEngine(site["pretrained"], site["engine"].gallery, fast_decode=True)
    official = ErnieViL2ImageProcessor(image_size=size)
    assert np.array_equal(fast.decode_upload(data, "a.jpg"),
                          ErnieViL2ImageProcessor(image_size=size, fast_decode=True).crops([data])[0])
    assert np.array_equal(site["engine"].decode_upload(data, "a.jpg"), official.crops([data])[0])
    assert site["pretrained"].image_processor.fast_decode is False  # the loaded model's processor is untouched

    made = []
    from ernievil2torch.apps.serve import engine as engine_module

    monkeypatch.setattr(engine_module, "SearchEngine", lambda *a, **k: made.append(k) or (_ for _ in ()).throw(
        RuntimeError("stop before serving")))
    with pytest.raises(RuntimeError, match="stop before serving"):
        server.serve(str(site["model"]), str(site["root"] / "gallery"), str(site["root"] / "images"),
                     fast_decode=True)
    assert made[-1]["fast_decode"] is True


def test_a_heic_gallery_photo_is_answered_as_a_metadata_free_jpeg(tmp_path, site):
    """Browsers cannot show HEIC: the gallery route answers such a photo as a JPEG made from its pixels alone (no
    EXIF comes along), while other formats are served as the files themselves; an unreadable one is a JSON 4xx."""
    require_module("pillow_heif")
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests" / "apps" / "index"))
    from photo_library import photo_bytes

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.heic").write_bytes(photo_bytes(5, "HEIF", taken="2024:01:15 08:00:00", size=(64, 48)))
    (images / "b.png").write_bytes(png_bytes())
    from ernievil2torch.apps.embed import embed

    embed(str(images), str(site["model"]), str(tmp_path / "gallery"), kind="image", batch_size=8, num_workers=0,
          progress=False)
    engine = SearchEngine(site["pretrained"], Gallery.load(tmp_path / "gallery", images))
    rows = {Path(engine.gallery.image_file(row)).name: row for row in range(2)}
    with TestClient(create_app(engine), base_url=BASE) as client:
        heic = client.get(f"/v1/images/{rows['a.heic']}")
        assert heic.status_code == 200 and heic.headers["content-type"] == "image/jpeg"
        picture = Image.open(io.BytesIO(heic.content))
        assert picture.format == "JPEG" and picture.size == (64, 48) and not picture.getexif()
        png = client.get(f"/v1/images/{rows['b.png']}")
        assert png.headers["content-type"] == "image/png" and png.content == (images / "b.png").read_bytes()
        (images / "a.heic").write_bytes(b"not a photo any more")
        broken = client.get(f"/v1/images/{rows['a.heic']}")
        assert broken.status_code == 422 and "cannot make a browser image" in broken.json()["error"]
