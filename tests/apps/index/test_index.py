"""``ernievil2 index`` (``ernievil2torch.apps.index``): one row per photo file with its facts, incremental runs that
embed only what changed (counted at the model), moves, copies, deletions, broken files, model mismatch, re-index."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers import require_module

require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

from photo_library import index_rows, listed_folders, make_library, photo_bytes, write  # noqa: E402

from ernievil2torch.apps.index import ModelMismatchError, index_photos  # noqa: E402
from ernievil2torch.apps.index.files import photo_id  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402
from ernievil2torch.modeling import ErnieViL2  # noqa: E402


@pytest.fixture
def calls(monkeypatch):
    """Images that went through the image tower, counted at the model (not from the report)."""
    seen = {"images": 0, "calls": 0}
    original = ErnieViL2.encode_image

    def counting(self, pixels, *args, **kwargs):
        seen["images"] += int(pixels.shape[0])
        seen["calls"] += 1
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(ErnieViL2, "encode_image", counting)
    return seen


def run(model, root, db, **options):
    return index_photos(str(model), [str(root)], db=db, progress=False, batch_size=3, **options)


def test_first_run_writes_one_row_per_file_with_its_facts(model_folder, tmp_path, calls):
    model = model_folder("tiny", 0)
    root = make_library(tmp_path / "photos").resolve()
    db = str(tmp_path / "photos.db")
    report = run(model, root, db)
    assert (report.added, report.unchanged, report.removed, calls["images"]) == (7, 0, 0, 7)
    assert [(os.path.basename(path), reason.startswith("corrupt or truncated"))
            for path, reason in report.failed] == [("broken.jpg", True)]
    assert report.rows == 7 and "added 7" in report.summary() and "cannot read" in report.summary()
    collection, rows, vectors = index_rows(db)
    assert collection == report.collection and collection.startswith("photos_")
    by_path = {meta["path"]: (row_id, meta) for row_id, meta in rows.items()}
    assert sorted(by_path) == ["2023/c.png", "2023/trip/a.jpg", "2023/trip/b.jpg", "2024/d.webp", "2024/e.heic",
                               "2024/f.jpg", "g.jpeg"]
    row_id, meta = by_path["2023/trip/a.jpg"]
    assert row_id == photo_id(str(root), "2023/trip/a.jpg") and meta["root"] == str(root)
    assert meta["folders"] == ["", "2023", "2023/trip"] and meta["folder"] == "2023/trip"
    assert (meta["width"], meta["height"]) == (40, 30)
    assert meta["taken"] == "2023-07-01T10:00:00" and meta["taken_ts"] == 1688205600
    assert meta["size"] == (root / "2023/trip/a.jpg").stat().st_size
    assert meta["mtime_ns"] == 1_700_000_000_000_000_000 and len(meta["sha256"]) == 64
    assert meta["model"] == model.name and len(meta["model_hash"]) == 64
    assert by_path["2023/c.png"][1]["taken"] is None and by_path["2024/e.heic"][1]["width"] == 40
    assert listed_folders(db) == ["2023", "2023/trip", "2024"]  # each photo's own folder; the root is not listed
    for vector in vectors.values():
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_incremental_runs_embed_only_what_changed(model_folder, tmp_path, calls):
    model = model_folder("tiny", 0)
    root = make_library(tmp_path / "photos").resolve()
    db = str(tmp_path / "photos.db")
    run(model, root, db)
    first_ids = set(index_rows(db)[1])
    calls.update(images=0, calls=0)

    again = run(model, root, db)
    assert (again.unchanged, again.embedded, calls["images"], calls["calls"]) == (7, 0, 0, 0)
    assert len(again.failed) == 1 and again.failed[0][1].endswith("(unchanged since: not retried)")
    assert set(index_rows(db)[1]) == first_ids

    os.utime(root / "g.jpeg", ns=(1, 1_800_000_000_000_000_000))  # touched: same bytes
    shutil.move(root / "2023/trip/b.jpg", root / "2024/b-moved.jpg")  # moved
    shutil.copy2(root / "2024/d.webp", root / "2023/d-copy.webp")  # copied
    (root / "2023/c.png").unlink()  # deleted
    write(root / "2024/f.jpg", photo_bytes(60, taken="2024:02:01 09:00:00"))  # changed
    write(root / "new.png", photo_bytes(8, "PNG"))  # added
    write(root / "new-twin.png", photo_bytes(8, "PNG"))  # added twice in one run: embedded once
    write(root / "broken.jpg", photo_bytes(9))  # repaired: retried
    report = run(model, root, db)
    assert (report.added, report.changed, report.moved, report.copied, report.removed, report.unchanged) == \
        (2, 1, 1, 2, 1, 4), report.summary()  # added: new.png and the repaired broken.jpg
    assert report.failed == [] and calls["images"] == report.embedded == 3  # f.jpg, new.png, broken.jpg
    _, rows, vectors = index_rows(db)
    paths = {meta["path"]: row_id for row_id, meta in rows.items()}
    assert sorted(paths) == ["2023/d-copy.webp", "2023/trip/a.jpg", "2024/b-moved.jpg", "2024/d.webp",
                             "2024/e.heic", "2024/f.jpg", "broken.jpg", "g.jpeg", "new-twin.png", "new.png"]
    assert np.array_equal(vectors[paths["2023/d-copy.webp"]], vectors[paths["2024/d.webp"]])
    assert np.array_equal(vectors[paths["new.png"]], vectors[paths["new-twin.png"]])
    assert rows[paths["g.jpeg"]]["mtime_ns"] == 1_800_000_000_000_000_000
    assert rows[paths["2024/f.jpg"]]["taken"] == "2024-02-01T09:00:00"
    assert paths["2023/trip/a.jpg"] in first_ids  # ids are stable


def test_a_database_inside_the_photo_folder_is_not_indexed(model_folder, tmp_path):
    root = tmp_path / "photos"
    write(root / "x.jpg", photo_bytes(12))
    write(root / "photos.db.thumbs" / "ab" / "thumb.jpg", photo_bytes(13))  # what serve --db caches there
    report = run(model_folder("tiny", 0), root, str(root / "photos.db"))
    write(root / "photos.db" / "planted.jpg", photo_bytes(14))
    again = run(model_folder("tiny", 0), root, str(root / "photos.db"))
    assert (report.added, report.rows, again.added, again.unchanged) == (1, 1, 0, 1)


def test_moved_file_keeps_its_vector_without_a_model_call(model_folder, tmp_path, calls):
    model = model_folder("tiny", 0)
    root = tmp_path / "photos"
    write(root / "old" / "x.jpg", photo_bytes(11))
    db = str(tmp_path / "photos.db")
    run(model, root, db)
    _, _, before = index_rows(db)
    assert listed_folders(db) == ["old"]
    calls.update(images=0, calls=0)
    (root / "sub").mkdir()
    shutil.move(root / "old" / "x.jpg", root / "sub" / "y.jpg")
    report = run(model, root, db)
    assert (report.moved, report.removed, report.added, calls["calls"]) == (1, 0, 0, 0)
    _, rows, after = index_rows(db)
    assert [meta["path"] for meta in rows.values()] == ["sub/y.jpg"]
    assert listed_folders(db) == ["sub"]  # the emptied folder left the list
    assert np.array_equal(next(iter(after.values())), next(iter(before.values())))


def test_another_model_is_refused_and_reindex_switches_when_complete(model_folder, tmp_path, calls, monkeypatch):
    from ernievil2torch.apps.index import indexer

    first, second = model_folder("tiny", 0), model_folder("tiny", 1)
    root = make_library(tmp_path / "photos")
    db = str(tmp_path / "photos.db")
    old = run(first, root, db).collection
    monkeypatch.setattr(indexer, "load_pretrained", lambda *a, **k: pytest.fail("loaded"), raising=False)
    with pytest.raises(ModelMismatchError, match="another model.*--reindex"):
        run(second, root, db)
    assert calls["images"] == 7 and index_rows(db)[0] == old
    monkeypatch.undo()
    report = run(second, root, db, reindex=True)
    assert report.reindexed_from == old and report.collection != old and report.rows == 7
    collection, rows, _ = index_rows(db)
    assert collection == report.collection and {m["model"] for m in rows.values()} == {second.name}
    from ernievil2torch.retrieval.milvus import connect, release
    client = connect(db)
    assert not client.has_collection(old) and not client.has_collection(f"{old}_failed")
    client.close()
    release(db)


@pytest.mark.parametrize("args, message", [
    (dict(db=None), "one of them"), (dict(uri="http://x:1"), "one of them"), (dict(folders=[]), "at least one"),
    (dict(folders=["missing"]), "not a folder"), (dict(db="x.sqlite"), "ends in .db"),
    (dict(batch_size=0), "positive")])
def test_bad_input_is_refused_before_any_work(model_folder, tmp_path, args, message, monkeypatch):
    model = model_folder("tiny", 0)
    (tmp_path / "photos").mkdir()
    options = dict(folders=[str(tmp_path / "photos")], db=str(tmp_path / "p.db"), progress=False)
    options.update({key: (str(tmp_path / value) if key == "db" and value else value) for key, value in args.items()})
    if options.get("folders") == ["missing"]:
        options["folders"] = [str(tmp_path / "missing")]
    with pytest.raises(InputError, match=message):
        index_photos(str(model), **options)
    assert not (tmp_path / "p.db").exists()


def test_overlapping_folders_are_refused(model_folder, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(InputError, match="overlap"):
        index_photos(str(model_folder("tiny", 0)), [str(tmp_path / "a"), str(tmp_path / "a" / "b")],
                     db=str(tmp_path / "p.db"), progress=False)
