"""``ernievil2 index`` killed with SIGKILL at named points (``ernievil2torch.apps.index.crash``), then run again:
the rows (count, ids, metadata, vectors) equal those of a run that was never interrupted."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, require_module

require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

from photo_library import index_rows, make_library, photo_bytes, write  # noqa: E402

from ernievil2torch.apps.index import index_photos  # noqa: E402
from ernievil2torch.apps.index.crash import ENV, POINTS  # noqa: E402
from ernievil2torch.apps.index.files import photo_id  # noqa: E402


def index(model, root, db, **options):
    return index_photos(str(model), [str(root)], db=str(db), progress=False, batch_size=2, **options)


def killed_cli_run(model, root, db, point, *extra):
    """``ernievil2 index`` in a child process that SIGKILLs itself at ``point``."""
    code = "import sys; from ernievil2torch.cli import main; sys.argv[0] = 'ernievil2'; main()"
    env = {**os.environ, ENV: point, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code, "index", str(model), str(root), "--db", str(db),
                           "--batch_size", "2", "--progress", "false", *extra],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def change_library(root: Path) -> None:
    """A changed file, a move, a deletion, a touch and four new files (five embeddings: three batches of two)."""
    write(root / "2024/f.jpg", photo_bytes(60), 1_710_000_000_000_000_000)
    (root / "moved").mkdir()
    shutil.move(root / "2023/trip/b.jpg", root / "moved/b.jpg")
    (root / "2023/c.png").unlink()
    os.utime(root / "g.jpeg", ns=(1, 1_720_000_000_000_000_000))
    for seed in range(20, 24):
        write(root / "new" / f"n{seed}.png", photo_bytes(seed, "PNG"), 1_730_000_000_000_000_000 + seed)


def comparable(db, root):
    """path -> (metadata without the root, vector), after checking each id is the stable id of its path."""
    _, rows, vectors = index_rows(db)
    out = {}
    for row_id, meta in rows.items():
        assert row_id == photo_id(str(root), meta["path"]) and meta["root"] == str(root)
        out[meta["path"]] = ({k: v for k, v in meta.items() if k != "root"}, vectors[row_id])
    return out


def assert_same_rows(got, expected):
    assert sorted(got) == sorted(expected)
    for path in expected:
        assert got[path][0] == expected[path][0], path
        np.testing.assert_allclose(got[path][1], expected[path][1], atol=1e-6)


@pytest.fixture(scope="module")
def reference(model_folder, tmp_path_factory):
    """The rows an uninterrupted run leaves for the changed library, per model."""
    out = {}
    for seed in (0, 1):
        base = tmp_path_factory.mktemp(f"reference{seed}")
        root = make_library(base / "photos").resolve()
        change_library(root)
        index(model_folder("tiny", seed), root, base / "photos.db")
        out[seed] = comparable(str(base / "photos.db"), root)
    return out


@pytest.mark.parametrize("point", ["batch-written:2", "before-changed-write", "before-removals"])
def test_killed_incremental_run_is_completed_by_the_next(point, model_folder, tmp_path, reference):
    model = model_folder("tiny", 0)
    root = make_library(tmp_path / "photos").resolve()
    db = tmp_path / "photos.db"
    index(model, root, db)
    change_library(root)
    killed_cli_run(model, root, db, point)
    index(model, root, db)
    assert_same_rows(comparable(str(db), root), reference[0])
    assert index(model, root, db).embedded == 0  # and it is complete: nothing left to do


@pytest.mark.parametrize("point", ["batch-written:1", "reindex-before-drop"])
def test_killed_reindex_keeps_the_old_index_until_the_new_one_is_complete(point, model_folder, tmp_path, reference):
    first, second = model_folder("tiny", 0), model_folder("tiny", 1)
    root = make_library(tmp_path / "photos").resolve()
    db = tmp_path / "photos.db"
    old = index(first, root, db).collection
    change_library(root)
    killed_cli_run(second, root, db, point, "--reindex")
    active, _, _ = index_rows(str(db))
    assert (active == old) == (point == "batch-written:1")  # searches used the complete old index meanwhile
    report = index(second, root, db, reindex=True)
    assert report.collection != old
    assert_same_rows(comparable(str(db), root), reference[1])


def test_every_crash_point_is_tested():
    tested = {"batch-written", "before-changed-write", "before-removals", "reindex-before-drop",
              "bulk-batch-written"}  # the last in test_index_bulk.py
    assert tested == set(POINTS)
