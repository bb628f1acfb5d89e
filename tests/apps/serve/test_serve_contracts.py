"""Promises of the service's parts that the end-to-end tests do not pin, each checked alone (no model, no server):
the batching statistics ``/healthz`` reports, the collector's batch boundaries, the limits' checks."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import require_module

require_module("fastapi")
from ernievil2torch.apps.serve.batching import BatchStats, MicroBatcher  # noqa: E402
from ernievil2torch.apps.serve.limits import ServeLimits  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402


def test_batch_stats_count_batches_items_and_a_power_of_two_histogram():
    stats = BatchStats()
    assert stats.as_dict() == {"batches": 0, "items": 0, "largest_batch": 0, "mean_batch": 0.0,
                               "size_histogram": {}}
    for size in (1, 2, 3, 4, 7, 8, 1, 200, 128, 127):
        stats.record(size)
    report = stats.as_dict()
    assert (report["batches"], report["items"], report["largest_batch"]) == (10, 481, 200)
    assert report["mean_batch"] == 48.1
    # sizes[i] counts batches of size 2^i .. 2^(i+1) - 1; the last bucket takes everything larger
    assert report["size_histogram"] == {"1-1": 2, "2-3": 2, "4-7": 2, "8-15": 1, "64-127": 1, "128-255": 2}
    thirds = BatchStats()
    for size in (1, 1, 2):
        thirds.record(size)
    assert thirds.as_dict()["mean_batch"] == 1.333  # three decimals
    stats.record(10_000)
    assert stats.as_dict()["size_histogram"]["128-255"] == 3 and stats.as_dict()["largest_batch"] == 10_000


def test_a_batch_waits_at_most_max_wait_and_holds_at_most_max_batch():
    """The collector takes what is waiting, then waits up to ``max_wait_s`` after the first item for more."""
    batches = []

    def run(items):
        batches.append(list(items))
        return items

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=3, max_wait_s=0.3)
            await batcher.start()
            try:  # a failed check must not leave the collector running: asyncio.run could not end
                started = time.perf_counter()
                first = asyncio.ensure_future(batcher.submit(["a"]))
                await asyncio.sleep(0.05)
                second = asyncio.ensure_future(batcher.submit(["b"]))  # within the wait: same batch
                results = [await asyncio.wait_for(first, 5), await asyncio.wait_for(second, 5)]
                waited = time.perf_counter() - started
                results.append(await asyncio.wait_for(batcher.submit(["c", "d", "e", "f", "g"]), 5))
                return results, waited, batcher.stats.as_dict()
            finally:
                await batcher.stop()

    results, waited, stats = asyncio.run(scenario())
    assert results == [["a"], ["b"], ["c", "d", "e", "f", "g"]]
    assert batches[0] == ["a", "b"] and 0.25 <= waited  # a lone item waits for company up to max_wait_s
    assert [len(b) for b in batches[1:]] == [3, 2] and stats["batches"] == 3 and stats["largest_batch"] == 3


def test_a_batcher_refuses_settings_it_cannot_run_with():
    for bad in ({"max_batch": 0}, {"max_pending": 0}, {"max_wait_s": -0.001}):
        with pytest.raises(ValueError, match="max_batch and max_pending must be positive"):
            MicroBatcher(lambda items: items, None, **bad)
    MicroBatcher(lambda items: items, None, max_batch=1, max_pending=1, max_wait_s=0)

    async def not_started():
        with pytest.raises(RuntimeError, match="not running"):
            await MicroBatcher(lambda items: items, None).submit(["x"])
        with pytest.raises(RuntimeError, match="set an executor"):
            await MicroBatcher(lambda items: items, None).start()

    asyncio.run(not_started())


def test_a_batch_function_returning_the_wrong_count_fails_its_callers():
    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(lambda items: items[:-1], pool, max_batch=4, max_wait_s=0.01)
            await batcher.start()
            try:
                with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
                    await asyncio.wait_for(batcher.submit(["a", "b"]), 5)
            finally:
                await batcher.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["max_body_bytes", "max_pixels", "max_files", "max_texts", "max_text_chars",
                                  "max_k"])
def test_every_limit_must_be_a_positive_integer(name):
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(InputError, match=f"{name} must be a positive integer"):
            ServeLimits(**{name: bad})
    assert getattr(ServeLimits(**{name: 1}), name) == 1
    defaults = ServeLimits()
    assert (defaults.max_body_bytes, defaults.max_pixels, defaults.max_files, defaults.max_texts,
            defaults.max_text_chars, defaults.max_k) == (20 * 1024 * 1024, 40_000_000, 16, 64, 1000, 1000)


def test_stop_cancels_the_callers_still_queued():
    """``stop()``: callers whose items still wait in the queue get CancelledError (they are not left hanging)."""
    import threading

    release = threading.Event()

    def run(items):
        release.wait(5)
        return items

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=1, max_wait_s=0)
            await batcher.start()
            busy = asyncio.ensure_future(batcher.submit(["a"]))
            await asyncio.sleep(0.05)  # "a" is computing; "b" and "c" queue up behind it
            queued = [asyncio.ensure_future(batcher.submit([x])) for x in ("b", "c")]
            await asyncio.sleep(0.05)
            await batcher.stop()
            outcomes = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 2)
            release.set()
            busy.cancel()
            return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes


# ---- the gallery ------------------------------------------------------------------------------------------------------
def test_gallery_rows_are_normalised_chunk_by_chunk_and_refused_when_not_finite(tmp_path, monkeypatch):
    import numpy as np

    from ernievil2torch.apps.serve import gallery as gallery_module
    from ernievil2torch.apps.serve.gallery import Gallery, ImageRoot

    monkeypatch.setattr(gallery_module, "LOAD_CHUNK_ROWS", 2)  # chunk edges at rows 2 and 4
    rows = np.array([[3, 4], [0, 0], [1, 0], [0, -2], [5, 12]], np.float64)
    gallery = Gallery.from_embeddings(rows, list("abcde"), ImageRoot(tmp_path))
    assert len(gallery) == 5 and gallery.dim == 2
    stored = np.stack([gallery.backend.fetch(str(r)).vector for r in range(5)])
    expected = np.array([[0.6, 0.8], [0, 0], [1, 0], [0, -1], [5 / 13, 12 / 13]], np.float32)
    np.testing.assert_allclose(stored, expected, atol=1e-7)  # every chunk normalised; a zero row stays zero
    hits = gallery.search(np.array([[0.0, 1.0]], np.float32), k=2)[0]
    assert [(h.row, h.id) for h in hits] == [(4, "e"), (0, "a")] and hits[0].score == pytest.approx(12 / 13)
    for bad_row in (0, 2, 3, 4):
        broken = rows.copy()
        broken[bad_row, 1] = np.nan if bad_row % 2 else np.inf
        # named as the gallery's (serve's start-up error), not as some back end's vectors
        with pytest.raises(InputError, match=f"gallery embeddings hold NaN or infinity \\(first in row {bad_row}\\)"):
            Gallery.from_embeddings(broken, list("abcde"), ImageRoot(tmp_path))
    with pytest.raises(InputError, match=r"queries must be \[Q, 2\]"):
        gallery.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(InputError, match="5 embeddings but 4 ids"):
        Gallery.from_embeddings(rows, list("abcd"), ImageRoot(tmp_path))
    for empty in (np.zeros((0, 2)), np.zeros(3)):
        with pytest.raises(InputError, match="non-empty \\[N, D\\]"):
            Gallery.from_embeddings(empty, [], ImageRoot(tmp_path))


# ---- the app's wiring ---------------------------------------------------------------------------------------------------
class RecordingEngine:
    """Answers every query with ``k`` made-up hits and records the k it was asked for."""

    def __init__(self) -> None:
        self.asked = []

    def describe(self) -> dict:
        return {"model": "stand-in", "gallery_size": 50}

    def decode_upload(self, data: bytes, name: str):
        import numpy as np

        return np.zeros((224, 224, 3), np.uint8)

    def text_batch(self, queries):
        import numpy as np

        from ernievil2torch.apps.serve.engine import Answer
        from ernievil2torch.apps.serve.gallery import Hit

        self.asked += [q.k for q in queries]
        return [Answer(np.ones(2, np.float32), [Hit(r, f"{r}.png", 1.0) for r in range(q.k)]) for q in queries]

    image_batch = text_batch


def test_k_defaults_to_10_and_the_batchers_use_the_settings():
    from fastapi.testclient import TestClient

    from ernievil2torch.apps.serve.app import ServiceSettings, create_app
    from serve_helpers import png_bytes

    engine = RecordingEngine()
    app = create_app(engine, ServiceSettings(max_batch=7, max_wait_ms=20.0))
    for batcher in app.state.batchers.values():
        assert batcher.max_batch == 7 and batcher.max_wait_s == pytest.approx(0.02)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert len(client.get("/v1/search", params={"q": "猫"}).json()["results"]) == 10
        response = client.post("/v1/search/image", files={"file": ("a.png", png_bytes(), "image/png")})
        assert response.status_code == 200 and len(response.json()["results"]) == 10
        assert client.get("/v1/search", params={"q": "猫", "k": 3}).json()["k"] == 3
    assert engine.asked == [10, 10, 3]


def test_service_settings_defaults_are_the_serve_command_defaults():
    """``ServiceSettings()`` (what ``create_app`` uses when given none) and ``serve()``'s flags agree."""
    import inspect

    from ernievil2torch.apps.serve.security import LOOPBACK_HOST_NAMES
    from ernievil2torch.apps.serve.server import serve
    from ernievil2torch.apps.serve.settings import ServiceSettings

    defaults = ServiceSettings()
    flags = inspect.signature(serve).parameters
    for name in ("max_batch", "max_wait_ms", "decode_workers"):
        assert getattr(defaults, name) == flags[name].default, name
    assert (defaults.max_batch, defaults.max_wait_ms, defaults.decode_workers) == (32, 5.0, 2)
    assert defaults.token is None and defaults.cors_origins == () and defaults.limits == ServeLimits()
    assert set(defaults.allowed_hosts) == set(LOOPBACK_HOST_NAMES)


def test_serve_checks_its_numbers_before_loading_anything(tmp_path):
    """Refused before any file is read: a batch of 0, no decode worker, a negative wait; a wait of 0 or a fraction
    of a millisecond is a valid setting (the gallery, which does not exist, is what fails next)."""
    from ernievil2torch.apps.serve.server import serve

    absent = str(tmp_path / "absent")
    for bad in ({"max_batch": 0}, {"decode_workers": 0}, {"max_wait_ms": -1.0}):
        with pytest.raises(InputError, match="max_batch and decode_workers must be positive"):
            serve(absent, absent, absent, **bad)
    for fine in ({"max_wait_ms": 0.0}, {"max_wait_ms": 0.5}, {"max_batch": 1, "decode_workers": 1}):
        with pytest.raises(InputError) as error:
            serve(absent, absent, absent, **fine)
        assert "must be positive" not in str(error.value)


def test_the_engine_applies_the_limits_it_is_given(tmp_path, model_folder):
    import numpy as np

    from ernievil2torch.apps.serve.engine import SearchEngine
    from ernievil2torch.apps.serve.gallery import Gallery, ImageRoot
    from ernievil2torch.errors import ImageTooLargeError
    from ernievil2torch.pretrained import load_pretrained
    from serve_helpers import png_bytes

    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + list("一只猫狗的照片")  # test_pretrained.py's folder
    pretrained = load_pretrained(model_folder("tiny", 3, vocab))
    dim = pretrained.model.config.text.hidden_size
    gallery = Gallery.from_embeddings(np.eye(3, dim, dtype=np.float32), ["a", "b", "c"], ImageRoot(tmp_path))
    strict = SearchEngine(pretrained, gallery, ServeLimits(max_pixels=64 * 48 - 1), max_length=9)
    with pytest.raises(ImageTooLargeError):
        strict.decode_upload(png_bytes(64, 48), "upload")
    assert strict.max_length == 9 and strict.limits.max_pixels == 64 * 48 - 1
    assert SearchEngine(pretrained, gallery).decode_upload(png_bytes(64, 48), "upload").shape[2] == 3


# ---- the body limit, at the ASGI level -----------------------------------------------------------------------------------
def call_body_limit(max_bytes: int, chunks, headers=()):
    """Send ``chunks`` through ``BodyLimit`` to an app that reads the whole body; returns (status, body bytes the
    app read, messages taken from the client)."""
    from ernievil2torch.apps.serve.middleware import BodyLimit

    read, taken, sent = [], [], []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        read.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        taken.append(1)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/embed/image", "headers": [
        (k.encode(), v.encode()) for k, v in headers]}

    async def run():
        from starlette.exceptions import HTTPException

        try:
            await BodyLimit(app, max_bytes)(scope, receive, send)
        except HTTPException as exc:  # raised from receive(): the app's JSON handler answers it
            return exc.status_code
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    status = asyncio.run(run())
    return status, read, len(taken)


def test_the_body_limit_is_exact_whether_declared_or_streamed():
    assert call_body_limit(10, [b"12345", b"67890"])[:2] == (200, [b"1234567890"])  # exactly the limit
    assert call_body_limit(10, [b"12345", b"678901"])[0] == 413  # one byte over, streamed
    assert call_body_limit(10, [b"1234567890"], [("content-length", "10")])[0] == 200
    status, read, _ = call_body_limit(10, [b"12345678901"], [("content-length", "11")])
    assert status == 413 and read == []  # declared over the limit: the app never runs
    for bad in ("-1", "ten", ""):
        assert call_body_limit(10, [b"x"], [("content-length", bad)])[0] == 400, bad


def test_a_declared_oversized_body_is_drained_within_bounds_or_not_read_at_all():
    """Over the limit but within 4x: the body is read and dropped first (the client then sees the 413, not a
    reset); beyond 4x, or when the client waits for ``100 Continue``, nothing is read."""
    chunks = [b"x" * 10] * 4
    status, read, taken = call_body_limit(10, chunks, [("content-length", "40")])
    assert (status, read, taken) == (413, [], 4)  # drained: every chunk taken
    status, read, taken = call_body_limit(10, [b"x" * 10] * 5, [("content-length", "50")])
    assert (status, read, taken) == (413, [], 0)  # over 4x: answered at once
    status, read, taken = call_body_limit(10, chunks, [("content-length", "40"), ("expect", "100-continue")])
    assert (status, read, taken) == (413, [], 0)



def test_a_streamed_oversized_body_is_drained_too():
    """Without a Content-Length the limit trips while the body streams in; the rest (within 4x) is still read and
    dropped before the 413, so a client that sends its whole body before reading gets the answer, not a reset."""
    status, read, taken = call_body_limit(10, [b"x" * 10] * 4)
    assert (status, read, taken) == (413, [], 4)  # over at the second chunk, the last two drained


def test_an_unexpected_error_is_a_json_500_without_its_detail_and_its_traceback_is_logged(caplog):
    """error_handlers' promise: anything not an input error answers 500 ``{"error": ...}`` saying only that the
    server log has the details (a path or a secret in the message never reaches the client), and the log has them:
    the method, the path and the traceback."""
    import logging

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ernievil2torch.apps.serve.error_handlers import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/broken")
    def broken():
        raise RuntimeError("detail for the log only: /home/alice/.ssh/id_ed25519")

    with caplog.at_level(logging.ERROR, logger="ernievil2torch.serve"):
        response = TestClient(app, raise_server_exceptions=False).get("/v1/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (the server log has the details)"}
    assert "alice" not in response.text
    logged = [r for r in caplog.records if r.name == "ernievil2torch.serve" and r.exc_info]
    assert len(logged) == 1 and logged[0].getMessage() == "internal error on GET /v1/broken"
    assert "id_ed25519" in str(logged[0].exc_info[1])


def test_a_stopped_batcher_refuses_new_items_rather_than_hold_them_forever():
    """After stop() nothing collects any more: submit must raise at once (a queued item would wait for ever)."""

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(lambda items: items, pool)
            await batcher.start()
            assert await asyncio.wait_for(batcher.submit(["x"]), 5) == ["x"]
            await batcher.stop()
            with pytest.raises(RuntimeError, match="not running"):
                await asyncio.wait_for(batcher.submit(["y"]), 5)

    asyncio.run(scenario())


def test_a_library_folder_filter_is_a_path_inside_the_library():
    """The folder filter names a folder under the indexed roots: '..' as a part, a NUL or an over-long value is
    refused, each alone (any one is enough); slashes around it are dropped."""
    from datetime import date

    from ernievil2torch.apps.serve.library import MAX_FOLDER_CHARS, LibraryFilter
    from ernievil2torch.retrieval.backends import Range, Under

    assert LibraryFilter(folder="/2024/trip/").where() == {"folder": Under("2024/trip")}
    assert LibraryFilter(folder="x" * MAX_FOLDER_CHARS).where() == {"folder": Under("x" * MAX_FOLDER_CHARS)}
    assert LibraryFilter(folder="a..b").where() == {"folder": Under("a..b")}  # '..' inside a name is a name
    for bad in ("2024/../secret", "..", "a\x00b", "x" * (MAX_FOLDER_CHARS + 1)):
        with pytest.raises(InputError, match="a folder path inside the library, without '..'"):
            LibraryFilter(folder=bad).where()
    assert LibraryFilter().where() == {}
    day = LibraryFilter(taken_from=date(2024, 5, 1), taken_to=date(2024, 5, 1)).where()["taken_ts"]
    assert isinstance(day, Range) and day.high - day.low == 86_399
    with pytest.raises(InputError, match="taken_from is after taken_to"):
        LibraryFilter(taken_from=date(2024, 5, 2), taken_to=date(2024, 5, 1)).where()


def test_a_foreign_host_is_told_which_hosts_the_service_answers_to():
    """HostCheck's 400 names the allowed hosts (sorted), so a user behind a proxy sees what to send or to allow."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ernievil2torch.apps.serve.middleware import HostCheck

    app = FastAPI()

    @app.get("/ok")
    def fine():
        return {"ok": True}

    client = TestClient(HostCheck(app, {"localhost", "127.0.0.1"}))
    refused = client.get("/ok", headers={"host": "evil.example"})
    assert refused.status_code == 400
    assert refused.json() == {"error": "unexpected Host header: this service answers only to 127.0.0.1, localhost"}
    assert client.get("/ok", headers={"host": "localhost:8000"}).json() == {"ok": True}
    assert TestClient(HostCheck(app, None)).get("/ok", headers={"host": "evil.example"}).status_code == 200


def test_the_folder_list_is_read_from_the_writers_list_not_the_photo_rows(tmp_path, caplog):
    """The page's folder list holds each listed folder and those above it, sorted and capped, read from the folder
    list beside the active collection; the photo rows are never scanned for it. An index without a folder list
    (an earlier version's) gives [] and one warning."""
    from ernievil2torch.apps.index.catalog import ALIAS, Catalog, collection_for, folders_collection
    from ernievil2torch.apps.serve import library as library_module
    from ernievil2torch.retrieval.milvus import MilvusBackend

    uri = str(tmp_path / "lib.db")
    catalog = Catalog.open(uri)
    collection = collection_for("ab" * 32)
    catalog.rows(collection, 4)
    catalog.publish(collection)
    library = library_module.PhotoLibrary.__new__(library_module.PhotoLibrary)
    library.uri, library._folder_list, library._unlisted = uri, None, set()
    library.backend = MilvusBackend(4, uri, collection=ALIAS, client=catalog.client)
    library.backend.rows = library.backend._paged = None  # a scan of the photo rows would fail
    with caplog.at_level("WARNING"):
        assert library.folders() == [] and library.folders() == []
    assert sum("has no folder list" in record.message for record in caplog.records) == 1
    catalog.folder_list(collection).add(["2023/trip/day1", "", "2024", "2023/trip/day2", "2024"])
    everything = ["2023", "2023/trip", "2023/trip/day1", "2023/trip/day2", "2024"]
    assert library.folders() == everything
    assert library.folders(limit=2) == ["2023", "2023/trip"]
    catalog.folder_list(collection).replace(["2024/x"])
    assert library.folders() == ["2024", "2024/x"]
    catalog.drop(collection)
    assert not catalog.client.has_collection(folders_collection(collection))
    catalog.close()


def test_library_searches_at_a_time_are_bounded():
    """``serve --db_searches N``: at most N database searches run at once (each filtered search on Milvus Lite
    copies every vector of the collection), the others wait their turn and all are answered."""
    import threading
    import time

    from ernievil2torch.apps.serve import library as library_module
    from ernievil2torch.errors import InputError
    from ernievil2torch.retrieval.backends import BackendHit

    running, most, lock = [0], [0], threading.Lock()

    class SlowBackend:
        def search(self, queries, k, where=None, offset=0):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return [[BackendHit("a" * 32, 0.5, {"path": "x.jpg"})]]

    library = library_module.PhotoLibrary.__new__(library_module.PhotoLibrary)
    library.backend, library._searching = SlowBackend(), library_module.FairSlots(2)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(library.search([[0.0] * 4], 1)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2 and len(answers) == 8 and all(a[0][0].path == "x.jpg" for a in answers)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InputError, match="db_searches"):
            library_module.PhotoLibrary("unused.db", "0" * 64, 4, None, searches=bad)
