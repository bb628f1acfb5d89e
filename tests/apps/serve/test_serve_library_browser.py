"""The photo-library page of ``ernievil2 serve --db`` in a real browser (Debian's Chromium, driven by Playwright):
a Chinese query typed with key events, the grid of thumbnails with scores, the folder and date filters, paging,
more-like-this and a dropped image; no console errors. ``ERNIEVIL2_SCREENSHOT_LIBRARY=docs/library_page.png`` also
saves the screenshot there (a small palette PNG) for the README. Skips without Chromium, fails so under CI."""
from __future__ import annotations

import base64
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import require_module

require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

from serve_helpers import ServerProcess, tiny_model_dir, write_gallery_images  # noqa: E402
from test_serve_browser import (CHROMIUM_ARGS, browser, _assert_page_font_draws_chinese,  # noqa: E402,F401
                                publish_screenshot)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "index"))
from photo_library import photo_bytes, write  # noqa: E402

from ernievil2torch.apps.index import index_photos  # noqa: E402

QUERY = "一只猫"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library_browser")
    model_dir = tiny_model_dir(root / "model")
    photos = root / "photos"
    write_gallery_images(photos / "相册")
    for i in range(14):
        write(photos / ("旅行" if i % 2 else "家") / f"p{i:02d}.jpg",
              photo_bytes(100 + i, taken=f"2023:0{1 + i % 9}:1{i % 9} 09:00:00", size=(320, 240)))
    index_photos(str(model_dir), [str(photos)], db=str(root / "photos.db"), progress=False)
    args = [str(model_dir), "--db", str(root / "photos.db"), "--port", "0", "--log_level", "warning"]
    with ServerProcess(args) as process:
        yield process, photos


def _api(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _ids(page):
    return page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")


def _wait_loaded(page, count: int, first: str = None) -> None:
    page.wait_for_function(
        "([n, first]) => { const cards = [...document.querySelectorAll('#results .card')];"
        " const imgs = cards.map(c => c.querySelector('img'));"
        " return cards.length === n && (!first || cards[0].dataset.id === first)"
        " && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=[count, first], timeout=60_000)


def test_library_page_in_chromium(browser, library, tmp_path):
    process, photos = library
    page = browser.new_page(viewport={"width": 1100, "height": 760}, device_scale_factor=1)
    errors, requested = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: requested.append(request.url))
    page.goto(process.url)
    page.wait_for_selector("body[data-ready='1']")
    total = _api(process.url + "healthz")["gallery_size"]
    assert f"相册共 {total} 张照片" in page.text_content("#info")
    assert page.eval_on_selector_all("#folder option", "o => o.map(x => x.value)")[:3] == ["", "家", "旅行"]

    page.select_option("#k", "12")
    page.click("#q")
    page.locator("#q").press_sequentially(QUERY)
    page.keyboard.press("Enter")
    _wait_loaded(page, 12)
    expected = _api(f"{process.url}v1/search?k=12&q={urllib.parse.quote(QUERY)}")["results"]
    assert _ids(page) == [r["id"] for r in expected]
    scores = page.eval_on_selector_all("#results .score", "nodes => nodes.map(n => n.textContent)")
    assert scores == [f"{r['score']:.4f}" for r in expected]
    _assert_page_font_draws_chinese(page)
    shot = tmp_path / "library_page.png"
    page.screenshot(path=str(shot))
    publish_screenshot(shot, "ERNIEVIL2_SCREENSHOT_LIBRARY")
    images = [url for url in requested if "/v1/photos/" in url or "/v1/thumbs/" in url]
    assert images and all("/v1/thumbs/" in url for url in images)  # the grid never loads a full photo

    page.click("#next")  # paging
    second = _api(f"{process.url}v1/search?k=12&offset=12&q={urllib.parse.quote(QUERY)}")["results"]
    _wait_loaded(page, len(second), second[0]["id"])
    assert _ids(page) == [r["id"] for r in second] and "第 13–" in page.text_content("#status")

    page.select_option("#folder", "旅行")  # the folder filter restarts at the first page
    wanted = _api(f"{process.url}v1/search?k=12&folder=%E6%97%85%E8%A1%8C&q={urllib.parse.quote(QUERY)}")["results"]
    _wait_loaded(page, len(wanted), wanted[0]["id"])
    assert all(r["path"].startswith("旅行/") for r in wanted) and _ids(page) == [r["id"] for r in wanted]

    page.fill("#from", "2023-03-01")  # a date range as well
    page.dispatch_event("#from", "change")
    page.fill("#to", "2023-04-30")
    page.dispatch_event("#to", "change")
    dated = _api(f"{process.url}v1/search?k=12&folder=%E6%97%85%E8%A1%8C&taken_from=2023-03-01&taken_to=2023-04-30"
                 f"&q={urllib.parse.quote(QUERY)}")["results"]
    assert dated and len(dated) < len(wanted)
    _wait_loaded(page, len(dated), dated[0]["id"])
    assert _ids(page) == [r["id"] for r in dated]

    target = dated[-1]["id"]  # more like this: the photo itself comes first
    page.click(f"#results .card[data-id='{target}'] .like")
    _wait_loaded(page, len(dated), target)

    page.select_option("#folder", "")
    page.fill("#from", "")
    page.dispatch_event("#from", "change")
    page.fill("#to", "")
    page.dispatch_event("#to", "change")
    cat = next(iter(photos.glob("相册/cat.jpg")), None) or next(p for p in sorted(photos.glob("相册/*")) if p.is_file())
    payload = base64.b64encode(cat.read_bytes()).decode()
    transfer = page.evaluate_handle(
        "([b64, name]) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: 'image/jpeg'})); return dt; }",
        [payload, cat.name])
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => { const c = document.querySelector('#results .card .path');"
                           " return c && c.textContent.startsWith('相册/'); }", timeout=60_000)
    assert page.text_content("#results .card .path") == f"相册/{cat.name}"
    page.close()
    assert not errors, errors

