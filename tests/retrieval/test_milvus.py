"""The Milvus back end (``ernievil2torch.retrieval.milvus``) passes the back-end contract, embedded (Milvus Lite in
this process) with an exact and an approximate index, and keeps to what it promises beyond the contract: filters
as checked expressions, upsert, paged rows, loopback-only port, one owner per data folder."""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import require_module

require_module("pymilvus")
require_module("milvus_lite")

from ernievil2torch.errors import InputError  # noqa: E402
from ernievil2torch.retrieval.backends import (BACKENDS, Contains, InMemoryBackend, Range, Under,  # noqa: E402
                                              create_backend)
from ernievil2torch.retrieval.milvus import (DatabaseBusyError, MilvusBackend, check_uri,  # noqa: E402
                                             filter_expression)

from test_backends import DIM, BackendContract, unit_rows  # noqa: E402

_names = itertools.count()


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One embedded database for the module (each test makes its own collections in it)."""
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


class TestMilvusBackend(BackendContract):
    @pytest.fixture(params=["FLAT", "HNSW"])
    def make(self, request, database):
        return lambda dim: create_backend("milvus", dim, uri=database, collection=f"c{next(_names)}",
                                          index_type=request.param)


def test_registered_and_named(database):
    assert "milvus" in BACKENDS
    backend = create_backend("milvus", DIM, uri=database, collection="named", index_type="HNSW")
    assert backend.name == "milvus-hnsw" and isinstance(backend, MilvusBackend)
    with pytest.raises(InputError, match="index_type"):
        create_backend("milvus", DIM, uri=database, index_type="PQ")
    with pytest.raises(InputError, match="4-d"):
        create_backend("milvus", 4, uri=database, collection="named")  # an existing collection keeps its dim


@pytest.mark.parametrize("where", [
    {"album": "b", "n": Range(10, 20)}, {"n": Range(high=5)}, {"n": Range(low=35)}, {"tags": Contains("t3")},
    {"tags": Contains("t3"), "album": "a"}, {"album": 'a" or 1 == 1'}, {"flag": True}, {"flag": False},
])
def test_filters_agree_with_the_in_memory_back_end(database, where):
    rows = unit_rows(40, seed=11)
    ids = [f"r{i}" for i in range(40)]
    meta = [{"album": "ab"[i % 2], "n": i, "tags": [f"t{i % 5}", "all"], "flag": i % 3 == 0} for i in range(40)]
    milvus = create_backend("milvus", DIM, uri=database, collection=f"f{next(_names)}")
    memory = InMemoryBackend(DIM, use_faiss=False)
    for backend in (milvus, memory):
        backend.add(rows, ids, meta)
    query = unit_rows(2, seed=12)
    assert ([[h.id for h in row] for row in milvus.search(query, k=40, where=where)]
            == [[h.id for h in row] for row in memory.search(query, k=40, where=where)])


@pytest.mark.parametrize("bound, exact", [(20, True), (19, False)])
def test_a_selective_filter_is_ranked_exactly_without_a_filtered_count(database, monkeypatch, bound, exact):
    """A filter keeping at most ``EXACT_FILTER_ROWS`` rows is ranked here over those rows read back by id; one more
    row and the index answers. Neither asks for a filtered ``count(*)`` (which Milvus Lite answers by materialising
    every passing row, vectors included)."""
    from ernievil2torch.retrieval import milvus as module

    rows, ids = unit_rows(40, seed=31), [f"r{i:02d}" for i in range(40)]
    backend = MilvusBackend(DIM, database, collection=f"x{next(_names)}", index_type="HNSW")
    backend.add(rows, ids, [{"album": "ab"[i % 2]} for i in range(40)])  # 20 rows in each album
    monkeypatch.setattr(module, "EXACT_FILTER_ROWS", bound)
    calls = []
    for name in ("query", "search", "get"):
        original = getattr(backend.client, name)
        monkeypatch.setattr(backend.client, name, lambda *a, _name=name, _f=original, **kw: (
            calls.append((_name, kw.get("output_fields"))), _f(*a, **kw))[1])
    query = unit_rows(1, seed=32)
    hits = backend.search(query, k=5, offset=2, where={"album": "b"})
    memory = InMemoryBackend(DIM, use_faiss=False)
    memory.add(rows, ids, [{"album": "ab"[i % 2]} for i in range(40)])
    assert [h.id for h in hits[0]] == [h.id for h in memory.search(query, k=5, offset=2, where={"album": "b"})[0]]
    assert all("count(*)" not in (fields or []) for _, fields in calls)
    assert ("get" in dict(calls)) is exact and ("search" in dict(calls)) is not exact, calls


#: Folder names that a string range or a LIKE pattern could get wrong: a sibling sharing a prefix (``a/bc``), the
#: character after ``/`` (``a/b0``), LIKE's wildcards, CJK, and the root ('').
_FOLDERS = ["", "a", "a/b", "a/b/c", "a/bc", "a/b0", "a0", "a_b", "a%b", "a/b/c/d", "照片", "照片/2024", "照片2"]
_TYPED = {"folder": "VARCHAR", "taken": "INT64"}


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
@pytest.mark.parametrize("where", [
    {"folder": Under("a/b")}, {"folder": Under("a")}, {"folder": Under("")}, {"folder": Under("照片")},
    {"folder": Under("a_b")}, {"folder": Under("a%b")}, {"folder": "a/b"}, {"folder": 3}, {"folder": Contains("a")},
    {"taken": Range(3.5, 20.2)}, {"taken": Range(low=30)}, {"taken": Range()}, {"taken": 7},
    {"taken": Range(5.2, 5.8)}, {"folder": Under("a/b"), "taken": Range(high=25), "album": "b"},
])
def test_typed_scalar_fields_filter_as_the_json_does(database, index_type, where):
    """Keys copied into indexed scalar fields answer every filter exactly as the in-memory back end does, whether
    the filter goes to the field (a fitting value) or to the JSON copy (any other), nulls and odd folder names
    included."""
    count = 52
    rows, ids = unit_rows(count, seed=21), [f"r{i}" for i in range(count)]
    meta = [{"folder": _FOLDERS[i % len(_FOLDERS)], "taken": None if i % 5 == 0 else i, "album": "ab"[i % 2]}
            for i in range(count)]
    meta[4].pop("taken")
    milvus = MilvusBackend(DIM, database, collection=f"t{next(_names)}", index_type=index_type, scalar_fields=_TYPED)
    memory = InMemoryBackend(DIM, use_faiss=False)
    for backend in (milvus, memory):
        backend.add(rows, ids, meta)
    query = unit_rows(2, seed=22)
    expected = [[h.id for h in row] for row in memory.search(query, k=count, where=where)]
    assert [[h.id for h in row] for row in milvus.search(query, k=count, where=where)] == expected
    assert sorted(dict(milvus.rows(where))) == sorted(set(expected[0])), where


def test_typed_fields_use_the_field_only_for_a_fitting_value():
    assert filter_expression({"f": Under("a/b")}, {"f": "VARCHAR"}) == '(f == "a/b" or (f >= "a/b/" and f < "a/b0"))'
    assert filter_expression({"t": Range(1.5, 7.2)}, {"t": "INT64"}) == "(t >= 2 and t <= 7)"
    assert filter_expression({"t": True}, {"t": "INT64"}) == 'metadata["t"] == true'
    assert filter_expression({"f": 3}, {"f": "VARCHAR"}) == 'metadata["f"] == 3'
    assert filter_expression({"f": Under("a")}) == '(metadata["f"] == "a" or (metadata["f"] >= "a/" and metadata["f"] < "a0"))'


def test_typed_fields_are_checked(database):
    for fields, message in (({"id": "VARCHAR"}, "other than id"), ({"a b": "INT64"}, "identifier"),
                            ({"n": "FLOAT"}, "VARCHAR, INT64")):
        with pytest.raises(InputError, match=message):
            MilvusBackend(DIM, database, collection="never_made", scalar_fields=fields)
    backend = MilvusBackend(DIM, database, collection=f"v{next(_names)}", scalar_fields=_TYPED)
    for entry, message in (({"taken": 1.5}, "64-bit integer"), ({"taken": True}, "64-bit integer"),
                           ({"folder": 3}, "string"), ({"folder": "x" * 4097}, "4096 bytes"),
                           ({"folder": "\udcff"}, "UTF-8")):
        with pytest.raises(InputError, match=message):
            backend.add(unit_rows(1, seed=1), ["x"], [entry])
    assert backend.count() == 0
    backend.add(unit_rows(3, seed=2), ["a", "b", "c"], [{"folder": "x/y"}, {"taken": 4}, {"folder": "z", "taken": 5}])
    assert sorted(dict(backend.rows({"folder": Under("x")}))) == ["a"]
    assert sorted(dict(backend.rows({"taken": Range(4, 5)}))) == ["b", "c"]
    plain = f"p{next(_names)}"
    MilvusBackend(DIM, database, collection=plain)
    with pytest.raises(InputError, match=r"no indexed field folder \(VARCHAR\)"):
        MilvusBackend(DIM, database, collection=plain, scalar_fields=_TYPED)
    with pytest.raises(InputError, match="leading or trailing"):
        Under("/a")


@pytest.mark.parametrize("where, message", [
    ({"a b": 1}, "identifier"), ({'x"]': 1}, "identifier"), ({"n": [1]}, "string, number or boolean"),
    ({"n": Range(float("nan"))}, "finite"), ({"n": Range("1")}, "finite")])
def test_hostile_filters_are_refused(where, message):
    with pytest.raises(InputError, match=message):
        filter_expression(where)


def test_expression_quotes_strings():
    assert filter_expression({"p": 'x" or "1'}) == 'metadata["p"] == "x\\" or \\"1"'
    assert filter_expression({"t": Range(1, 2)}) == '(metadata["t"] >= 1 and metadata["t"] <= 2)'


def test_upsert_replaces_and_rows_pages(database, monkeypatch):
    import ernievil2torch.retrieval.milvus as milvus

    monkeypatch.setattr(milvus, "READ_BATCH", 7)
    backend = create_backend("milvus", DIM, uri=database, collection=f"u{next(_names)}")
    rows = unit_rows(20, seed=13)
    backend.upsert(rows, [f"r{i}" for i in range(20)], [{"n": i} for i in range(20)])
    backend.upsert(rows[:2][::-1], ["r0", "r1"], [{"n": 100}, {"n": 101}])
    assert backend.count() == 20
    assert np.array_equal(backend.fetch("r0").vector, rows[1]) and backend.fetch("r1").metadata == {"n": 101}
    seen = dict(backend.rows())
    assert len(seen) == 20 and seen["r5"] == {"n": 5}
    assert sorted(dict(backend.rows({"n": Range(100)}))) == ["r0", "r1"]


def test_uri_checks(tmp_path):
    assert check_uri("http://127.0.0.1:19530") == "http://127.0.0.1:19530"
    for bad, message in ((str(tmp_path / "x.sqlite"), "ends in .db"), (str(tmp_path / "no" / "x.db"), "does not exist"),
                         ("ftp://host", "http://HOST:PORT"), ("", "path ending")):
        with pytest.raises(InputError, match=message):
            check_uri(bad)
    (tmp_path / "file.db").write_text("not a folder")
    with pytest.raises(InputError, match="not a Milvus Lite"):
        check_uri(str(tmp_path / "file.db"))


def test_embedded_port_is_loopback_only_and_one_process_owns_the_folder(tmp_path):
    """The embedded server listens on 127.0.0.1 only; a second process is refused with a clear error."""
    import psutil

    path = str(tmp_path / "own.db")
    backend = create_backend("milvus", DIM, uri=path, collection="owned")
    backend.add(unit_rows(2), ["a", "b"])
    listening = [c.laddr for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(address.ip in ("127.0.0.1", "::ffff:127.0.0.1") for address in listening), listening
    script = textwrap.dedent(f"""
        from ernievil2torch.retrieval.milvus import DatabaseBusyError, connect
        try:
            connect({path!r})
        except DatabaseBusyError as exc:
            print("BUSY", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "BUSY" in out.stdout and "another process" in out.stdout, out.stdout + out.stderr
    assert issubclass(DatabaseBusyError, InputError)
