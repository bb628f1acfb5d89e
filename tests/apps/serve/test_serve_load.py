"""The loopback load test (benchmarks/serve_load.py) works and is bounded: a small run passes with zero 5xx."""
from __future__ import annotations

import json
import subprocess
import sys


from helpers import require_module

from serve_helpers import REPO

require_module("fastapi")


def test_load_script_small_run(tmp_path):
    report = REPO / "benchmarks" / "serve_load.md"
    before = report.read_bytes() if report.exists() else None
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--quick", "--clients", "3",
                           "--requests", "15", "--images", "12", "--deadline", "300", "--json", str(summary_file)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert summary["planned"] == summary["done"] == 45
    assert summary["server_errors"] == 0 and summary["dropped"] == 0 and summary["unexpected"] == 0
    assert any(kind.startswith("bad:") for kind in summary["kinds"]) and summary["req_per_s"] > 0
    assert summary["batching"]["text"]["items"] > 0
    assert "| request kind |" in proc.stdout and "| passed |" in proc.stdout
    assert (report.read_bytes() if report.exists() else None) == before  # written only with --write


def test_library_mode_small_run_through_db_and_uri_on_one_built_library(tmp_path):
    """``--library`` on 300 rows (20 real JPEGs), both forms in one run: the library built once (and kept for a
    later run), loaded and served through --db, then loaded into a ``milvus-lite server`` process for --uri; every
    request kind answered as expected, the memory of each process measured, nothing written without --write."""
    require_module("milvus_lite")
    report = REPO / "benchmarks" / "serve_load_library.md"
    before = report.read_bytes() if report.exists() else None
    work, summary_file = tmp_path / "work", tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--library", "--rows", "300",
                           "--real-photos", "20", "--size", "tiny", "--clients", "2", "--requests", "30",
                           "--bad-every", "3", "--workdir", str(work), "--deadline", "300", "--json",
                           str(summary_file), "--forms", "db", "uri"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads(summary_file.read_text(encoding="utf-8"))["forms"]
    assert list(runs) == ["db", "uri"]
    for form, summary in runs.items():
        assert summary["planned"] == summary["done"] == 60 and summary["library_rows"] == 300
        assert summary["server_errors"] == summary["dropped"] == summary["unexpected"] == 0
        good = {kind for kind in summary["kinds"] if not kind.startswith("bad:")}
        assert good == {"text search", "text search, folder filter", "text search, date range", "text search, page 3",
                        "more like this", "image search (upload)", "thumbnail", "folder list"}, good
        assert all(row["got"] == {"200": row["count"]} for kind, row in summary["kinds"].items() if kind in good)
        hostile = {"bad: unknown id", "bad: malformed id", "bad: photo path traversal", "bad: k=0", "bad: k=5000",
                   "bad: page past the limit", "bad: folder ..", "bad: bad date", "bad: inverted date range",
                   "bad: non-image upload", "bad: oversized upload", "bad: malformed JSON"}
        assert hostile <= set(summary["kinds"]), hostile - set(summary["kinds"])
        service = summary["memory"]["service"]
        assert service["kernel_peak"] >= service["at_end"] > 50 * 2 ** 20
        assert summary["load"]["now"] and summary["load"]["peak_rss"] > 50 * 2 ** 20
    assert runs["db"]["memory"]["milvus-lite server"] is None
    assert runs["uri"]["memory"]["milvus-lite server"]["kernel_peak"] > 50 * 2 ** 20
    for line in ("## `serve --db`", "## `serve --uri`", "`milvus-lite server` process, from its start",
                 "computed, not measured"):
        assert line in proc.stdout, line
    assert proc.stdout.count("| passed |") == 2 and "FAILED" not in proc.stdout
    assert (report.read_bytes() if report.exists() else None) == before  # written only with --write
    sys.path.insert(0, str(REPO / "benchmarks"))
    from library_site import cached_site, site_folder

    kept = cached_site(site_folder(work, "tiny", 300, 20))  # what a later run at the same size reuses
    assert kept is not None and kept.rows == 300 and set(kept.loads) == {"db", "uri"} and not kept.built_now


def test_the_server_form_can_open_the_embedded_forms_database_only_after_it(tmp_path):
    """``--uri-serves-db`` reuses the database the ``db`` form loads, so it is refused (before any work) unless both
    forms run, ``db`` first."""
    for forms in (["uri"], ["db"], ["uri", "db"]):
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--library", "--rows", "10",
                               "--workdir", str(tmp_path / "work"), "--uri-serves-db", "--forms", *forms],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2 and "--uri-serves-db needs --forms db uri" in proc.stderr, forms
        assert not (tmp_path / "work").exists()
