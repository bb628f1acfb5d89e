"""The search back-end protocol (``ernievil2torch.retrieval.backends``): a contract any back end must pass, run for
the in-memory one with and without FAISS, plus the factory and the service's gallery over the protocol.

A new back end (a vector database) runs the same contract: subclass :class:`BackendContract` in its test module
and give ``make`` (a fixture returning ``factory(dim) -> empty back end``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from ernievil2torch.data.image_root import ImageLookupError, ImageRoot
from ernievil2torch.errors import InputError
from ernievil2torch.retrieval.backends import (BACKENDS, BackendHit, Contains, InMemoryBackend, Range, SearchBackend,
                                               UnknownIdError, backend_factory, create_backend)
from ernievil2torch.retrieval.topk import faiss_available

DIM = 16


def unit_rows(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, rows: np.ndarray, ids, k: int):
    """(ids, scores) of the k best rows of each query by inner product (random data: no ties)."""
    scores = queries @ rows.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


class BackendContract:
    """What every :class:`SearchBackend` must do. Subclasses provide the ``make`` fixture."""

    make: Callable[[int], SearchBackend]

    @pytest.fixture
    def filled(self, make):
        """A back end holding 40 rows ``r0..r39``; even rows in album ``a``, odd ones in ``b``."""
        backend = make(DIM)
        rows = unit_rows(40)
        ids = [f"r{i}" for i in range(40)]
        backend.add(rows, ids, [{"album": "a" if i % 2 == 0 else "b", "n": i} for i in range(40)])
        return backend, rows, ids

    def test_is_a_search_backend(self, make):
        assert isinstance(make(DIM), SearchBackend)

    def test_empty_backend(self, make):
        backend = make(DIM)
        assert backend.count() == 0 and backend.dim == DIM
        assert backend.search(unit_rows(3, seed=1), k=5) == [[], [], []]
        assert backend.search(unit_rows(1, seed=1), k=5, where={"album": "a"}, offset=2) == [[]]
        with pytest.raises(UnknownIdError, match="'r0'"):
            backend.fetch("r0")
        assert backend.remove(["r0"]) == 0

    def test_add_then_fetch(self, filled):
        backend, rows, ids = filled
        assert backend.count() == 40
        stored = backend.fetch("r7")
        assert stored.id == "r7" and stored.vector.dtype == np.float32
        assert np.array_equal(stored.vector, rows[7]) and stored.metadata == {"album": "b", "n": 7}
        with pytest.raises(UnknownIdError):
            backend.fetch("r40")

    def test_search_is_exact_topk_best_first(self, filled):
        backend, rows, ids = filled
        queries = unit_rows(5, seed=2)
        expected_ids, expected_scores = brute_force(queries, rows, ids, 10)
        hits = backend.search(queries, k=10)
        assert [[h.id for h in row] for row in hits] == expected_ids
        assert np.allclose([[h.score for h in row] for row in hits], expected_scores, atol=1e-5)
        assert all(isinstance(h, BackendHit) and h.metadata["n"] == int(h.id[1:]) for row in hits for h in row)

    def test_k_larger_than_count_gives_every_row(self, filled):
        backend, rows, ids = filled
        hits, = backend.search(unit_rows(1, seed=3), k=1000)
        assert len(hits) == 40 and sorted(h.id for h in hits) == sorted(ids)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))

    def test_offset_pages_through_the_ranking(self, filled):
        backend, _, _ = filled
        query = unit_rows(2, seed=4)
        everything = backend.search(query, k=40)
        for offset, k in ((0, 5), (5, 5), (37, 10), (39, 1)):
            page = backend.search(query, k=k, offset=offset)
            assert [[h.id for h in row] for row in page] == [[h.id for h in row[offset:offset + k]]
                                                             for row in everything]
        assert backend.search(query, k=3, offset=40) == [[], []]

    def test_filter_keeps_only_matching_rows_ranked_among_themselves(self, filled):
        backend, rows, ids = filled
        query = unit_rows(1, seed=5)
        odd = [i for i in range(40) if i % 2]
        expected, _ = brute_force(query, rows[odd], [ids[i] for i in odd], 7)
        hits, = backend.search(query, k=7, where={"album": "b"})
        assert [h.id for h in hits] == expected[0] and all(h.metadata["album"] == "b" for h in hits)
        paged, = backend.search(query, k=3, where={"album": "b"}, offset=2)
        assert [h.id for h in paged] == expected[0][2:5]
        both, = backend.search(query, k=40, where={"album": "b", "n": 9})
        assert [h.id for h in both] == ["r9"]
        assert backend.search(query, k=5, where={"album": "nope"}) == [[]]
        assert backend.search(query, k=5, where={"missing_key": 1}) == [[]]

    def test_range_and_contains_filters(self, make):
        backend = make(DIM)
        rows = unit_rows(30, seed=8)
        meta = [{"n": i, "folders": ["", f"d{i % 3}", f"d{i % 3}/e{i % 2}"], "flag": i % 4 == 0} for i in range(30)]
        backend.add(rows, [f"r{i}" for i in range(30)], meta)
        query = unit_rows(1, seed=9)
        for where, keep in (({"n": Range(5, 9)}, lambda i: 5 <= i <= 9), ({"n": Range(high=3)}, lambda i: i <= 3),
                            ({"folders": Contains("d1")}, lambda i: i % 3 == 1),
                            ({"folders": Contains("d2/e0"), "n": Range(low=10)}, lambda i: i % 6 == 2 and i >= 10),
                            ({"flag": True}, lambda i: i % 4 == 0), ({"n": Contains(1)}, lambda i: False),
                            ({"folders": Range(0, 1)}, lambda i: False)):
            chosen = [i for i in range(30) if keep(i)]
            expected = brute_force(query, rows[chosen], [f"r{i}" for i in chosen], 30)[0][0] if chosen else []
            assert [h.id for h in backend.search(query, k=30, where=where)[0]] == expected, where

    def test_ids_are_stable_across_remove(self, filled):
        backend, rows, ids = filled
        assert backend.remove(["r3", "r10", "never-added"]) == 2
        assert backend.count() == 38
        assert backend.remove(["r3"]) == 0
        for i in (0, 4, 11, 39):
            assert np.array_equal(backend.fetch(f"r{i}").vector, rows[i])
        with pytest.raises(UnknownIdError):
            backend.fetch("r10")
        query = unit_rows(3, seed=6)
        kept = [i for i in range(40) if i not in (3, 10)]
        expected, _ = brute_force(query, rows[kept], [ids[i] for i in kept], 38)
        assert [[h.id for h in row] for row in backend.search(query, k=100)] == expected
        backend.add(rows[[3]], ["r3"], [{"album": "b", "n": 3}])  # an id can come back after its removal
        assert backend.count() == 39 and np.array_equal(backend.fetch("r3").vector, rows[3])
        assert backend.fetch("r4").metadata == {"album": "a", "n": 4}

    def test_add_after_search_is_searched(self, filled):
        backend, rows, _ = filled
        extra = unit_rows(1, seed=7)
        backend.add(extra, ["new"])
        hits, = backend.search(extra, k=1)
        assert hits[0].id == "new" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert backend.fetch("new").metadata == {}

    def test_bad_input_is_refused_and_nothing_changes(self, filled):
        backend, rows, _ = filled
        refusals = [
            (lambda: backend.add(unit_rows(2, dim=DIM + 1), ["x", "y"]), f"\\[N, {DIM}\\]"),
            (lambda: backend.add(unit_rows(2)[0], ["x"]), f"\\[N, {DIM}\\]"),
            (lambda: backend.add(unit_rows(2), ["x"]), "2 vectors but 1 ids"),
            (lambda: backend.add(unit_rows(2), ["x", "x"]), "unique"),
            (lambda: backend.add(unit_rows(2), ["x", "r1"]), "already held"),
            (lambda: backend.add(unit_rows(2), ["x", 5]), "must be a string"),
            (lambda: backend.add(unit_rows(2), ["x", "y"], [{}]), "metadata"),
            (lambda: backend.add(np.full((1, DIM), np.nan, np.float32), ["x"]), "NaN"),
            (lambda: backend.search(unit_rows(1, dim=DIM - 1), k=3), f"\\[N, {DIM}\\]"),
            (lambda: backend.search(unit_rows(1), k=0), "k must be"),
            (lambda: backend.search(unit_rows(1), k=3, offset=-1), "offset"),
            (lambda: backend.search(unit_rows(1), k=3, where=["album"]), "where"),
        ]
        for call, message in refusals:
            with pytest.raises(InputError, match=message):
                call()
            assert backend.count() == 40
        with pytest.raises(UnknownIdError):
            backend.fetch("x")


class TestInMemoryBackend(BackendContract):
    @pytest.fixture(params=[False, True], ids=["torch", "faiss"])
    def make(self, request):
        if request.param and not faiss_available():
            pytest.skip("faiss is not installed")
        return lambda dim: create_backend("memory", dim, use_faiss=request.param)

    def test_reports_how_it_searches(self, make):
        backend = make(DIM)
        backend.add(unit_rows(3), ["a", "b", "c"])
        assert backend.name == ("faiss" if backend.use_faiss else "torch")
        backend.remove(["a", "b", "c"])
        assert backend.search(unit_rows(1), k=2) == [[]]


def test_in_memory_ties_keep_the_order_rows_were_added():
    backend = InMemoryBackend(2, use_faiss=False)
    backend.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], np.float32), ["w", "x", "y", "z"])
    backend.remove(["w"])
    backend.add(np.array([[1.0, 0.0]], np.float32), ["w"])
    hits, = backend.search(np.array([[1.0, 0.0]], np.float32), k=4)
    assert [h.id for h in hits] == ["y", "z", "w", "x"]


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_in_memory_picks_faiss_for_large_collections(monkeypatch):
    import ernievil2torch.retrieval.backends as backends

    monkeypatch.setattr(backends, "FAISS_MIN_ROWS", 10)
    backend = InMemoryBackend(DIM)
    backend.add(unit_rows(9), [str(i) for i in range(9)])
    assert backend.name == "torch"
    backend.add(unit_rows(1, seed=9), ["9"])
    assert backend.name == "faiss"
    backend.remove(["0"])
    assert backend.name == "torch"
    assert InMemoryBackend(DIM, use_faiss=False).name == "torch"


def test_factory_picks_by_name_and_refuses_unknown_ones():
    assert set(BACKENDS) >= {"memory", "milvus"}
    backend = create_backend("memory", 8, use_faiss=False)
    assert isinstance(backend, InMemoryBackend) and backend.dim == 8 and backend.count() == 0
    with pytest.raises(InputError, match="unknown search back end 'qdrant'; known: memory, milvus"):
        create_backend("qdrant", 8)
    with pytest.raises(InputError, match="search back end 'milvus'.*uri"):
        create_backend("milvus", 8)  # a database must be named
    assert backend_factory("memory") is InMemoryBackend
    with pytest.raises(InputError, match="unknown search back end 'Memory'"):
        backend_factory("Memory")
    with pytest.raises(InputError, match="search back end 'memory'"):
        create_backend("memory", 8, metric="l2")
    for dim in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="dim must be a positive integer"):
            create_backend("memory", dim)


def test_gallery_talks_to_the_backend_by_row_ids(tmp_path):
    from ernievil2torch.apps.serve.gallery import Gallery

    (tmp_path / "a.png").write_bytes(b"")
    rows = unit_rows(4) * 3.0  # not normalised: the gallery normalises
    gallery = Gallery.from_embeddings(rows, ["a.png", "b.png", "c.png", "d.png"], ImageRoot(tmp_path),
                                      use_faiss=False)
    assert len(gallery) == 4 and gallery.dim == DIM and gallery.backend.name == "torch"
    stored = gallery.backend.fetch("2")
    assert stored.metadata == {"id": "c.png"} and np.allclose(stored.vector, rows[2] / 3.0, atol=1e-6)
    hits, = gallery.search(rows[[1]] / 3.0, k=2)
    assert (hits[0].row, hits[0].id) == (1, "b.png") and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert gallery.image_file(0) == (tmp_path / "a.png").resolve()
    gallery.backend.remove(["0"])
    with pytest.raises(ImageLookupError, match="no gallery row 0") as caught:
        gallery.image_file(0)
    assert caught.value.status == 404
    with pytest.raises(ImageLookupError, match="not found under the image root"):
        gallery.image_file(3)
