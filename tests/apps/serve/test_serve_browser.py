"""The search page in a real browser: Debian's Chromium, driven by Playwright, against ``ernievil2 serve``.

Types a Chinese query with real key events, waits until the result images have loaded and checks that they are the
API's results; then picks a gallery image for image -> image search (and drops another one on the drop zone) and
checks that the query image comes first. No console errors are allowed (a blocked script or a CSP violation would
show there). The browser is the OS package (``apt-get install chromium``, done by ``scripts/setup.sh --dev``);
Playwright never downloads one. Without it the test skips, but fails under ``ERNIEVIL2_REQUIRE_ORACLES=1`` (CI).

Chinese on the page needs no system font: the page carries its own (the service serves the Noto Sans SC file of
``pylopdf-fonts-zh-cn``), and the test gives Chromium no font and checks that the page's font loaded. ``/?q=``
opens the page with a search, and ``/docs`` works with every request outside the service refused. ``ERNIEVIL2_SCREENSHOT=docs/serve_page.png`` also saves the screenshot there
(reduced to a small palette PNG) for the README.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest


from helpers import unavailable
from serve_helpers import REPO, ServerProcess, embedded_gallery, tiny_model_dir

CHROMIUM = os.environ.get("ERNIEVIL2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
QUERY = "一只猫"


def _unavailable(reason: str) -> None:
    unavailable(reason + " (scripts/setup.sh --dev installs chromium)")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ERNIEVIL2_CHROMIUM)")
    with sync_playwright() as playwright:
        # No font is handed to Chromium: the page must carry its own Chinese font (a bare machine has none).
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    model_dir = tiny_model_dir(root / "model")
    ids = embedded_gallery(root, model_dir)
    args = [str(model_dir), "--gallery", str(root / "gallery"), "--images", str(root / "images"), "--port", "0",
            "--log_level", "warning"]
    with ServerProcess(args) as process:
        yield process, root, ids


def _api(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _result_ids(page):
    return page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")


def _wait_for_loaded_results(page, count: int) -> None:
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('#results .card img')];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=count,
        timeout=60_000)


def test_search_page_in_chromium(browser, server, tmp_path):
    process, root, ids = server
    page = browser.new_page(viewport={"width": 1000, "height": 720}, device_scale_factor=1)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(process.url)
    page.wait_for_selector("body[data-ready='1']")
    assert f"图库共 {len(ids)} 张图片" in page.text_content("#info")
    assert page.is_visible("#synthetic") and "随机权重" in page.text_content("#synthetic")

    # text -> image: real key events typing Chinese, then Enter
    page.click("#q")
    page.locator("#q").press_sequentially(QUERY)
    assert page.input_value("#q") == QUERY
    page.keyboard.press("Enter")
    shown = min(10, len(ids))  # the page asks for 10; a gallery without the shared photos holds fewer
    _wait_for_loaded_results(page, shown)
    expected = _api(f"{process.url}v1/search?k=10&q={urllib.parse.quote(QUERY)}")["results"]
    assert _result_ids(page) == [r["id"] for r in expected]
    assert f"找到 {shown} 个结果" in page.text_content("#status")
    scores = page.eval_on_selector_all("#results .score", "nodes => nodes.map(n => n.textContent)")
    assert scores == [f"相似度 {r['score']:.4f}" for r in expected]
    _assert_page_font_draws_chinese(page)
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot))
    publish_screenshot(shot)

    # image -> image: pick a gallery file with the file input
    query_id = "cat.jpg" if "cat.jpg" in ids else ids[0]
    page.set_input_files("#file", str(root / "images" / query_id))
    page.wait_for_function("id => { const c = document.querySelector('#results .card');"
                           " return c && c.dataset.id === id; }", arg=query_id, timeout=60_000)
    _wait_for_loaded_results(page, shown)
    assert page.is_visible("#query-preview")
    assert _result_ids(page)[0] == query_id

    # image -> image: drop another gallery file on the drop zone
    dropped_id = next(i for i in ids if i.startswith("相册/") and i != query_id)
    payload = base64.b64encode((root / "images" / dropped_id).read_bytes()).decode()
    transfer = page.evaluate_handle(
        "([b64, name]) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: 'image/png'})); return dt; }",
        [payload, Path(dropped_id).name])
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_function("id => { const c = document.querySelector('#results .card');"
                           " return c && c.dataset.id === id; }", arg=dropped_id, timeout=60_000)

    # a bad query is explained on the page, and the service keeps serving
    page.fill("#q", "   ")
    page.click("#go")
    assert "请输入" in page.text_content("#status")
    page.close()
    assert not errors, errors
    assert _api(process.url + "healthz")["status"] == "ok"


PAGE_FONT = "ERNIE-ViL Page Sans SC"


def _assert_page_font_draws_chinese(page) -> None:
    """The page's own font loaded (from the service, or an installed Noto Sans SC) and draws the query's
    characters: text in it is laid out with real glyph widths, not the fallback's boxes."""
    page.evaluate("document.fonts.ready")
    page.wait_for_function(f"document.fonts.check('15px \"{PAGE_FONT}\"', '{QUERY}')", timeout=60_000)
    status = page.evaluate(f"[...document.fonts].filter(f => f.family.replace(/\"/g, '') === '{PAGE_FONT}')"
                           ".map(f => f.status)")
    assert status == ["loaded"], status


def test_the_address_opens_the_page_with_its_search(browser, server):
    """/?q=TEXT is a shareable search: the page runs it on load; a search typed later updates the address."""
    process, _, ids = server
    page = browser.new_page()
    page.goto(f"{process.url}?q={urllib.parse.quote(QUERY)}")
    shown = min(10, len(ids))
    _wait_for_loaded_results(page, shown)
    expected = _api(f"{process.url}v1/search?k=10&q={urllib.parse.quote(QUERY)}")["results"]
    assert page.input_value("#q") == QUERY and _result_ids(page) == [r["id"] for r in expected]
    page.fill("#q", "红色的花")
    page.keyboard.press("Enter")
    page.wait_for_function("() => decodeURIComponent(location.search) === '?q=红色的花'", timeout=60_000)
    page.close()


def test_api_docs_work_offline(browser, server):
    """/docs draws Swagger UI from files the service itself serves: the browser is refused every other host."""
    process, _, _ = server
    page = browser.new_page()
    outside = []

    def only_this_service(route):
        if route.request.url.startswith(process.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()
    page.route("**/*", only_this_service)
    page.goto(process.url + "docs")
    page.wait_for_function("document.querySelectorAll('.swagger-ui .opblock').length > 0"
                           " && document.body.innerText.includes('/v1/search')", timeout=60_000)
    assert page.is_visible(".swagger-ui") and not outside, outside
    page.close()


def publish_screenshot(shot: Path, variable: str = "ERNIEVIL2_SCREENSHOT") -> None:
    """Copy the screenshot to the path in the environment variable ``variable`` (relative to the repo), as a small
    palette PNG; nothing when it is unset."""
    target = os.environ.get(variable)
    if not target:
        return
    from PIL import Image

    path = Path(target) if Path(target).is_absolute() else REPO / target
    with Image.open(shot) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
