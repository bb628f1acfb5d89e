"""``ernievil2 serve --db``: a photo library that ``ernievil2 index`` keeps in Milvus, through FastAPI's TestClient:
text, image and more-like-this searches, folder and date filters, pages, EXIF-free cached thumbnails, files only
from the library, JSON 4xx for hostile requests (the TestClient re-raises any server exception: no 5xx)."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import require_module, torch_threads

require_module("fastapi")
require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "index"))
from photo_library import make_library, photo_bytes, write  # noqa: E402
from PIL import Image  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ernievil2torch.apps.index import index_photos  # noqa: E402
from ernievil2torch.apps.serve import server  # noqa: E402
from ernievil2torch.apps.serve.app import create_app  # noqa: E402
from ernievil2torch.apps.serve.engine import SearchEngine  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402
from ernievil2torch.pretrained import load_pretrained  # noqa: E402

BASE = "http://127.0.0.1:8000"


def gps_jpeg(seed: int) -> bytes:
    """A JPEG whose EXIF holds a capture time and a GPS position (what a thumbnail must not carry)."""
    image = Image.open(io.BytesIO(photo_bytes(seed, size=(800, 600))))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2022:05:04 12:00:00"
    exif[0x8825] = {1: "N", 2: (39.0, 54.0, 0.0), 3: "E", 4: (116.0, 23.0, 0.0)}
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture(scope="module")
def site(model_folder, tmp_path_factory):
    with torch_threads(1):
        root = tmp_path_factory.mktemp("library")
        model = model_folder("tiny224", 4, vocab="synthetic")
        photos = make_library(root / "photos")
        write(photos / "2022" / "gps.jpg", gps_jpeg(30))
        db = str(root / "photos.db")
        index_photos(str(model), [str(photos)], db=db, progress=False)
        library = server._searchable(str(model), None, None, None, "memory", db, None, None, None)
        engine = SearchEngine(load_pretrained(model), library)
        with TestClient(create_app(engine), base_url=BASE) as client:
            yield {"client": client, "photos": photos.resolve(), "db": Path(db), "model": model, "library": library}


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def test_text_search_pages_through_the_whole_library(site):
    client = site["client"]
    everything = ok(client.get("/v1/search", params={"q": "一只猫", "k": 20}))
    assert len(everything["results"]) == 8 and everything["next_offset"] is None
    scores = [hit["score"] for hit in everything["results"]]
    assert scores == sorted(scores, reverse=True)
    first = ok(client.get("/v1/search", params={"q": "一只猫", "k": 3}))
    second = ok(client.get("/v1/search", params={"q": "一只猫", "k": 3, "offset": 3}))
    assert first["next_offset"] == 3 and second["offset"] == 3
    assert [h["id"] for h in first["results"] + second["results"]] == [h["id"] for h in everything["results"][:6]]
    assert ok(client.get("/v1/search", params={"q": "一只猫"}))["k"] == 24  # the default page: the grid's 24
    deepest = ok(client.get("/v1/search", params={"q": "一只猫", "k": 1, "offset": 16383}))  # offset + k = 16384
    assert deepest["results"] == [] and deepest["next_offset"] is None
    hit = everything["results"][0]
    assert hit["thumb_url"] == f"/v1/thumbs/{hit['id']}" and hit["photo_url"] == f"/v1/photos/{hit['id']}"


def test_folder_and_date_filters(site):
    client = site["client"]
    trip = ok(client.get("/v1/search", params={"q": "旅行", "k": 20, "folder": "2023"}))["results"]
    assert sorted(h["path"] for h in trip) == ["2023/c.png", "2023/trip/a.jpg", "2023/trip/b.jpg"]
    day = ok(client.get("/v1/search", params={"q": "旅行", "k": 20, "taken_from": "2023-07-01",
                                              "taken_to": "2023-07-01"}))["results"]
    assert [h["path"] for h in day] == ["2023/trip/a.jpg"] and day[0]["taken"] == "2023-07-01T10:00:00"
    since = ok(client.get("/v1/search", params={"q": "旅行", "k": 20, "taken_from": "2023-07-02"}))["results"]
    assert sorted(h["path"] for h in since) == ["2023/trip/b.jpg", "2024/f.jpg"]
    both = ok(client.get("/v1/search", params={"q": "旅行", "folder": "2024", "taken_to": "2023-12-31"}))
    assert both["results"] == []
    listed = ok(client.get("/v1/folders"))["folders"]
    assert {"2023", "2023/trip", "2024"} <= set(listed) and listed == sorted(listed) and "" not in listed


def test_more_like_this_and_image_upload(site):
    client = site["client"]
    target = ok(client.get("/v1/search", params={"q": "照片", "k": 20, "folder": "2024"}))["results"][0]
    like = ok(client.get(f"/v1/similar/{target['id']}", params={"k": 4}))
    assert like["like"] == target["id"] and like["results"][0]["id"] == target["id"]
    assert like["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    upload = (site["photos"] / target["path"]).read_bytes() if not target["path"].endswith(".heic") else None
    if upload is not None:
        found = ok(client.post("/v1/search/image", params={"k": 2},
                               files={"file": ("q.jpg", upload, "image/jpeg")}))
        assert found["results"][0]["id"] == target["id"]
    found = ok(client.post("/v1/search/image", params={"k": 2, "folder": "2023/trip"},
                           files={"file": ("q.png", photo_bytes(77, "PNG"), "image/png")}))
    assert {h["path"] for h in found["results"]} == {"2023/trip/a.jpg", "2023/trip/b.jpg"}


def test_searches_wait_their_turn_without_holding_up_thumbnails_and_folders(site):
    """Searches beyond ``--db_searches`` wait inside the library, in arrival order, on threads of the library's own
    pool: eight waiting searches (more than asyncio's default pool of six threads on two cores could even hold)
    leave a thumbnail and the folder list answered at once, and every search is answered once the gate opens."""
    import threading
    import time

    from ernievil2torch.apps.serve.fair_slots import FairSlots

    client, library = site["client"], site["library"]
    hit = ok(client.get("/v1/search", params={"q": "一只猫", "k": 1}))["results"][0]
    gate, kept = FairSlots(1), library._searching
    gate.acquire()  # the one database search slot is busy
    library._searching = gate
    answers = []
    searches = [threading.Thread(target=lambda i=i: answers.append(client.get("/v1/search", params={"q": f"猫{i}"})))
                for i in range(8)]
    try:
        for thread in searches:
            thread.start()
        deadline = time.monotonic() + 60
        while gate.waiting < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.waiting == 8, f"only {gate.waiting} of 8 searches reached the library"
        assert client.get(hit["thumb_url"]).status_code == 200
        assert isinstance(ok(client.get("/v1/folders"))["folders"], list)
        assert gate.waiting == 8 and not answers  # answered while every search still waited
    finally:
        gate.release()
        for thread in searches:
            thread.join(60)
        library._searching = kept
    assert [response.status_code for response in answers] == [200] * 8


def test_thumbnails_are_small_exif_free_and_made_once(site):
    client = site["client"]
    hit, = ok(client.get("/v1/search", params={"q": "地图", "taken_from": "2022-01-01", "taken_to": "2022-12-31"}))[
        "results"]
    original = Image.open(site["photos"] / "2022/gps.jpg")
    assert original.getexif().get_ifd(0x8825)  # the photo has a GPS position ...
    response = client.get(hit["thumb_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert max(thumb.size) == 320 and thumb.format == "JPEG"
    assert not thumb.getexif() and "exif" not in thumb.info and b"GPS" not in response.content  # ... its thumb none
    made = list(Path(f"{site['db']}.thumbs").rglob("*.jpg"))
    stamp = made[0].stat().st_mtime_ns
    assert client.get(hit["thumb_url"]).content == response.content
    assert list(Path(f"{site['db']}.thumbs").rglob("*.jpg")) == made and made[0].stat().st_mtime_ns == stamp
    photo = client.get(hit["photo_url"])
    assert photo.status_code == 200 and photo.content == (site["photos"] / "2022/gps.jpg").read_bytes()
    heic = ok(client.get("/v1/search", params={"q": "x", "k": 20, "folder": "2024"}))["results"]
    heic_hit, = [h for h in heic if h["path"].endswith(".heic")]
    assert Image.open(io.BytesIO(client.get(heic_hit["thumb_url"]).content)).format == "JPEG"


@pytest.mark.parametrize("url, status, fragment", [
    ("/v1/thumbs/not-an-id", 404, "32 hex digits"), ("/v1/photos/" + "0" * 32, 404, "no photo"),
    ("/v1/similar/" + "f" * 32, 404, "no photo"), ("/v1/photos/..%2F..%2Fetc%2Fpasswd", 404, ""),
    ("/v1/search?q=x&folder=../..", 422, "folder"), ("/v1/search?q=x&taken_from=yesterday", 422, "taken_from"),
    ("/v1/search?q=x&taken_from=2024-01-02&taken_to=2024-01-01", 422, "after"),
    ("/v1/search?q=x&offset=-1", 422, "offset"), ("/v1/search?q=x&k=1000&offset=16000", 422, "offset + k"),
    ("/v1/search?q=x&k=2&offset=16383", 422, "at most 16384"),
    ("/v1/search?q=x&k=0", 422, "k"), ("/v1/search?q=%20", 422, "empty"), ("/v1/images/0", 404, ""),
    ("/v1/similar/" + "a" * 100, 422, "photo_id")])
def test_hostile_requests_get_json_4xx(site, url, status, fragment):
    before = encoded(site)
    response = site["client"].get(url)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert encoded(site) == before  # refused before any model work


def encoded(site) -> int:
    """The texts and images the service's model has encoded so far (its batchers' counts in /healthz)."""
    batching = ok(site["client"].get("/healthz"))["batching"]
    return batching["text"]["items"] + batching["image"]["items"]


@pytest.mark.parametrize("params, fragment", [({"k": 0}, "k"), ({"k": 2, "offset": 16383}, "at most 16384"),
                                              ({"folder": "../x"}, "folder")])
def test_a_bad_image_search_is_refused_before_the_upload_is_encoded(site, params, fragment):
    before = encoded(site)
    response = site["client"].post("/v1/search/image", params=params,
                                   files={"file": ("q.png", photo_bytes(77, "PNG"), "image/png")})
    assert response.status_code == 422 and fragment in response.json()["error"]
    assert encoded(site) == before


def test_the_photo_route_serves_the_photo_file_itself_with_its_image_type(site):
    """What the grid's link opens: the indexed file's own bytes, typed by its extension (the browser shows it
    rather than downloading it)."""
    client = site["client"]
    hits = ok(client.get("/v1/search", params={"q": "一只猫", "k": 20}))["results"]
    for suffix, media_type in ((".jpg", "image/jpeg"), (".png", "image/png")):
        hit = next(h for h in hits if h["path"].endswith(suffix))
        response = client.get(hit["photo_url"])
        assert response.status_code == 200 and response.headers["content-type"] == media_type
        assert response.content == (site["photos"] / hit["path"]).read_bytes()


def test_files_outside_the_library_and_database_files_are_never_served(site, tmp_path):
    library, client = site["library"], site["client"]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photo_bytes(99))
    link = site["photos"] / "link.jpg"
    os.symlink(secret, link)
    inside_db = site["db"] / "stolen.jpg"
    inside_db.write_bytes(photo_bytes(98))
    rows = [("a" * 32, str(site["photos"]), "link.jpg"), ("b" * 32, str(site["photos"].parent), "photos.db/stolen.jpg"),
            ("c" * 32, str(site["photos"]), "../photos.db/stolen.jpg")]
    try:
        library.backend.upsert(np.tile(library.backend.fetch(next(iter(dict(library.backend.rows())))).vector, (3, 1)),
                               [r[0] for r in rows], [{"root": r[1], "path": r[2], "sha256": r[0]} for r in rows])
        for row_id, _, _ in rows:
            for kind in ("photos", "thumbs"):
                response = client.get(f"/v1/{kind}/{row_id}")
                assert response.status_code == 403 and "outside the library" in response.json()["error"], kind
    finally:
        library.backend.remove([r[0] for r in rows])
        link.unlink()


def test_the_page_is_the_library_page(site):
    page = site["client"].get("/").text
    assert "相册搜索" in page and 'id="folder"' in page and "/v1/similar/" in page and "/v1/thumbs" not in page
    health = ok(site["client"].get("/healthz"))
    assert health["gallery_size"] == 8 and health["search_backend"] == "milvus-hnsw"


def test_serve_refuses_a_library_of_another_model_before_loading(site, model_folder, monkeypatch):
    monkeypatch.setattr(server, "load_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    other = model_folder("tiny", 0)
    for kwargs, message in ((dict(db=str(site["db"])), "indexed with another model"),
                            (dict(db=str(site["db"]), gallery="g"), "belong to the other form"),
                            (dict(db=str(site["db"]), uri="http://127.0.0.1:1"), "not both"),
                            (dict(), "missing GALLERY"), (dict(gallery="g"), "missing IMAGES")):
        with pytest.raises(InputError, match=message):
            server.serve(str(other), **kwargs)
