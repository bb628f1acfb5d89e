"""``ernievil2 index MODEL --from_embeddings OUT`` (``ernievil2torch.apps.index.bulk``): an ``embed`` output loaded
as exactly the rows a folder run writes, after which a folder run embeds nothing; files changed since embed are
skipped and listed; every refusal comes before any write; a load killed with SIGKILL is finished by a re-run; the
``--uri`` path into a separate server process."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, require_module

require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

from photo_library import index_rows, listed_folders, make_library, photo_bytes, write  # noqa: E402
from test_index_server import milvus_server  # noqa: E402,F401  (the fixture: a separate milvus-lite server)

from ernievil2torch.apps.embed import embed  # noqa: E402
from ernievil2torch.apps.index import ModelMismatchError, index_photos, load_embeddings  # noqa: E402
from ernievil2torch.apps.index.catalog import active_collection, collection_for  # noqa: E402
from ernievil2torch.apps.index.crash import ENV  # noqa: E402
from ernievil2torch.apps.index.model_hash import model_fingerprint  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402
from ernievil2torch.modeling import ErnieViL2  # noqa: E402
from ernievil2torch.retrieval.milvus import connect, release  # noqa: E402

PHOTOS = 7  # make_library: seven readable photos and one broken file


@pytest.fixture(scope="module")
def built(model_folder, tmp_path_factory):
    """A library, its embed output, and the index a folder run makes of it (the reference rows)."""
    base = tmp_path_factory.mktemp("bulk")
    model = model_folder("tiny", 0)
    root = make_library(base / "photos").resolve()
    embed(str(root), str(model), str(base / "out"), batch_size=3, shard_size=3, num_workers=0, progress=False)
    index_photos(str(model), [str(root)], db=str(base / "folder.db"), progress=False, batch_size=3)
    return {"model": model, "root": root, "out": base / "out", "reference": index_rows(str(base / "folder.db"))}


@pytest.fixture
def calls(monkeypatch):
    """Images that went through the image tower, counted at the model."""
    seen = {"images": 0}
    original = ErnieViL2.encode_image

    def counting(self, pixels, *args, **kwargs):
        seen["images"] += int(pixels.shape[0])
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(ErnieViL2, "encode_image", counting)
    return seen


def load(built, db, out=None, **options):
    return load_embeddings(str(built["model"]), str(out or built["out"]), db=str(db), progress=False, **options)


def assert_rows_equal(got, expected):
    """Same active collection, ids and metadata; vectors equal to float tolerance."""
    assert got[0] == expected[0]
    assert sorted(got[1]) == sorted(expected[1]) and len(got[1]) == PHOTOS
    for row_id, metadata in expected[1].items():
        assert got[1][row_id] == metadata, metadata["path"]
        np.testing.assert_allclose(got[2][row_id], expected[2][row_id], atol=2e-5)


def test_embed_records_the_model_hash_and_each_file(built):
    manifest = json.loads((built["out"] / "manifest.json").read_text())
    assert manifest["model_hash"] == model_fingerprint(built["model"]) and manifest["model_name"] == "model"
    records = [json.loads(line) for line in (built["out"] / "files.jsonl").read_text().splitlines()]
    ids = (built["out"] / "ids.txt").read_text().splitlines()
    assert [r["path"] for r in records] == ids and {r["root"] for r in records} == {str(built["root"])}
    a = records[ids.index("2023/trip/a.jpg")]
    assert a["taken"] == "2023-07-01T10:00:00" and (a["width"], a["height"]) == (40, 30)
    assert a["mtime_ns"] == 1_700_000_000_000_000_000
    assert a["size"] == (built["root"] / "2023/trip/a.jpg").stat().st_size
    assert "2024/e.heic" in ids  # phones' HEIC photos are embedded too


def test_bulk_load_writes_the_rows_a_folder_run_writes_and_a_folder_run_then_embeds_nothing(built, tmp_path,
                                                                                             calls):
    db = tmp_path / "photos.db"
    report = load(built, db, batch_size=3)
    assert (report.loaded, report.present, report.skipped, report.rows) == (PHOTOS, 0, [], PHOTOS)
    assert calls["images"] == 0 and "loaded 7" in report.summary()
    assert_rows_equal(index_rows(str(db)), built["reference"])
    assert listed_folders(str(db)) == ["2023", "2023/trip", "2024"]
    again = index_photos(str(built["model"]), [str(built["root"])], db=str(db), progress=False)
    assert calls["images"] == 0 and again.model_calls == 0 and again.embedded == 0
    assert (again.unchanged, again.added, again.removed, len(again.failed)) == (PHOTOS, 0, 0, 1)  # broken.jpg
    assert load(built, db).present == PHOTOS  # a repeated load writes nothing


def test_files_changed_since_embed_are_skipped_and_listed_and_the_next_folder_run_embeds_them(built, tmp_path,
                                                                                              calls):
    root = tmp_path / "photos"
    shutil.copytree(built["root"], root)
    out = tmp_path / "out"
    embed(str(root), str(built["model"]), str(out), num_workers=0, progress=False)
    write(root / "2024/f.jpg", photo_bytes(60), 1_710_000_000_000_000_000)  # changed
    (root / "g.jpeg").unlink()  # gone
    db = tmp_path / "photos.db"
    report = load(built, db, out=out)
    reasons = dict(report.skipped)
    assert report.loaded == PHOTOS - 2 and set(reasons) == {str(root.resolve() / "2024/f.jpg"),
                                                            str(root.resolve() / "g.jpeg")}
    assert "changed since embed ran" in reasons[str(root.resolve() / "2024/f.jpg")]
    assert "gone" in reasons[str(root.resolve() / "g.jpeg")] and "not loaded" in report.summary()
    paths = {meta["path"] for meta in index_rows(str(db))[1].values()}
    assert "2024/f.jpg" not in paths and len(paths) == PHOTOS - 2
    calls["images"] = 0  # embed's own images counted so far
    after = index_photos(str(built["model"]), [str(root)], db=str(db), progress=False)
    assert calls["images"] == 1 and (after.added, after.unchanged) == (1, PHOTOS - 2)


def _copy(built, tmp_path, change):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    manifest = json.loads((out / "manifest.json").read_text())
    change(out, manifest)
    if (out / "manifest.json").exists():
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _text(out, manifest):
    manifest["kind"] = "text"


def _older(out, manifest):
    del manifest["model_hash"], manifest["files"]
    (out / "files.jsonl").unlink()


def _no_files(out, manifest):  # what an embed of webdataset shards writes
    del manifest["files"]
    (out / "files.jsonl").unlink()


def _other_model(out, manifest):
    manifest["model_hash"] = "0" * 64


def _unjoined(out, manifest):
    (out / "manifest.json").unlink()


def _join_cut_short(out, manifest):
    lines = (out / "files.jsonl").read_text().splitlines()
    (out / "files.jsonl").write_text("\n".join(lines[:-1]) + "\n")


def _damaged_record(out, manifest):
    lines = (out / "files.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["path"] = "../outside.jpg"
    (out / "files.jsonl").write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")


@pytest.mark.parametrize("change, message", [
    (_text, "holds text embeddings"),
    (_older, "older `ernievil2 embed`"),
    (_no_files, "records no image files"),
    (_other_model, "made by another model"),
    (_unjoined, "unfinished `ernievil2 embed` run"),
    (_join_cut_short, "a join that did not finish"),
    (_damaged_record, "not a relative path inside its root"),
])
def test_outputs_that_cannot_be_loaded_are_refused_before_any_write(built, tmp_path, change, message):
    out = _copy(built, tmp_path, change)
    with pytest.raises(InputError, match=re.escape(message)):
        load(built, tmp_path / "photos.db", out=out)
    assert not (tmp_path / "photos.db").exists()


def test_an_index_of_another_model_is_refused_and_reindex_switches(built, model_folder, tmp_path):
    db = tmp_path / "photos.db"
    other = index_photos(str(model_folder("tiny", 1)), [str(built["root"])], db=str(db), progress=False)
    with pytest.raises(ModelMismatchError, match="indexed with another model"):
        load(built, db)
    assert index_rows(str(db))[0] == other.collection  # untouched
    report = load(built, db, reindex=True)
    assert report.reindexed_from == other.collection
    assert_rows_equal(index_rows(str(db)), built["reference"])


def test_a_load_killed_mid_way_is_finished_by_a_re_run(built, tmp_path):
    db = tmp_path / "photos.db"
    code = "import sys; from ernievil2torch.cli import main; sys.argv[0] = 'ernievil2'; main()"
    env = {**os.environ, ENV: "bulk-batch-written:2", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code, "index", str(built["model"]), "--from_embeddings",
                           str(built["out"]), "--db", str(db), "--batch_size", "2", "--progress", "false"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    client = connect(str(db))
    try:  # searches see no half-loaded index: the alias comes at the end; two batches of two are written
        assert active_collection(client) is None
        collection = collection_for(model_fingerprint(built["model"]))
        assert client.query(collection, filter="", output_fields=["count(*)"],
                            consistency_level="Strong")[0]["count(*)"] == 4
    finally:
        client.close()
        release(str(db))
    report = load(built, db, batch_size=2)
    assert (report.present, report.loaded) == (4, PHOTOS - 4)  # what the killed run wrote is not written again
    assert_rows_equal(index_rows(str(db)), built["reference"])
    assert listed_folders(str(db)) == ["2023", "2023/trip", "2024"]  # none lost to the kill


def test_the_uri_path_loads_into_a_separate_server_process(built, milvus_server, calls):
    uri, _, _ = milvus_server
    report = load_embeddings(str(built["model"]), str(built["out"]), uri=uri, progress=False)
    assert (report.loaded, report.rows) == (PHOTOS, PHOTOS)
    assert_rows_equal(index_rows(uri), built["reference"])
    again = index_photos(str(built["model"]), [str(built["root"])], uri=uri, progress=False)
    assert calls["images"] == 0 and (again.unchanged, again.embedded) == (PHOTOS, 0)
