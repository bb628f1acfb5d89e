"""``ernievil2 dedup``: near-duplicate groups by construction, against brute force, chunk sizes, FAISS, the command,
and a memory bound (a gallery whose full similarity matrix would need 6 GiB)."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from ernievil2torch.apps.dedup import backend_links, dedup, near_duplicate_groups, union_links
from ernievil2torch.retrieval.backends import create_backend
from ernievil2torch.retrieval.topk import NormalizedRows, faiss_available
from ernievil2torch.errors import InputError, OutputExistsError

from serve_helpers import REPO, console_command


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n: int = 300, dim: int = 64, seed: int = 0):
    """Random directions (pairwise cosines far below 0.9) with planted near-duplicate groups; returns the
    embeddings and the expected groups (largest first)."""
    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((n, dim)))
    expected = []

    def near(row: int, noise: float) -> np.ndarray:
        return _unit(x[row] + noise * rng.standard_normal(dim))

    x[10], x[200], x[299] = near(5, 0.02), near(5, 0.02), near(5, 0.02)  # a group of four (cos ~0.98)
    expected.append([5, 10, 200, 299])
    x[7] = x[3]  # an exact copy
    expected.append([3, 7])
    # a chain 50 ~ 51 ~ 52: each link above 0.95, the ends below (single linkage joins them)
    step = _unit(rng.standard_normal(dim))
    step -= (step @ x[50]) * x[50]
    step = _unit(step)
    for i, angle in ((51, 0.25), (52, 0.5)):
        x[i] = np.cos(angle) * x[50] + np.sin(angle) * step
    expected.append([50, 51, 52])
    expected.sort(key=lambda g: (-len(g), g[0]))
    return x, expected


def brute_force(x: np.ndarray, threshold: float):
    """Connected components by a plain depth-first search over the full similarity matrix."""
    sims = _unit(x) @ _unit(x).T
    seen, groups = set(), []
    for start in range(len(x)):
        if start in seen:
            continue
        stack, members = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            members.append(node)
            for other in np.nonzero(sims[node] >= threshold)[0]:
                if int(other) not in seen:
                    seen.add(int(other))
                    stack.append(int(other))
        if len(members) > 1:
            groups.append(sorted(members))
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_planted_groups_for_every_chunk_size(chunk_size):
    x, expected = planted()
    assert float(x[50] @ x[52]) < 0.95 < float(x[50] @ x[51])  # the chain really is a chain
    groups = near_duplicate_groups(x, 0.95, chunk_size=chunk_size)
    assert [g.tolist() for g in groups] == expected


def test_matches_brute_force_on_clustered_data():
    rng = np.random.default_rng(3)
    centers = _unit(rng.standard_normal((40, 24)))
    noise = rng.uniform(0.002, 0.06, (700, 1))  # cosines to the centre from ~0.96 to ~0.99999
    x = _unit(centers[rng.integers(0, 40, 700)] + noise * rng.standard_normal((700, 24)))
    x = np.concatenate([x, _unit(rng.standard_normal((300, 24)))])
    for threshold in (0.9, 0.97, 0.995):
        expected = brute_force(x, threshold)
        assert len(expected) >= 5  # the data has groups at this threshold
        for chunk in (33, 256, 4096):
            assert [g.tolist() for g in near_duplicate_groups(x, threshold, chunk_size=chunk)] == expected


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
def test_faiss_range_search_finds_the_same_groups():
    x, expected = planted()
    assert [g.tolist() for g in near_duplicate_groups(x, 0.95, chunk_size=50, use_faiss=True)] == expected


@pytest.mark.parametrize("use_faiss", [False, True], ids=["torch", "faiss"])
def test_links_through_the_search_backend_protocol_match_the_block_join(use_faiss):
    """``backend_links`` pages past ``first_k`` for big groups (40 exact copies, ties everywhere) and finds the
    same groups as the block join, with any back end that holds the rows."""
    if use_faiss and not faiss_available():
        pytest.skip("faiss-cpu not installed")
    x, expected = planted()
    copies = list(range(100, 140))
    x[copies] = x[100]
    expected = [g.tolist() for g in near_duplicate_groups(x, 0.95, chunk_size=64)]
    assert expected[0] == sorted(copies) and len(expected) == 4
    backend = create_backend("memory", x.shape[1], use_faiss=use_faiss)
    backend.add(x, [str(i) for i in range(len(x))])
    parent = np.arange(len(x), dtype=np.int64)
    pairs = set()
    for a, b in backend_links(backend, NormalizedRows(x), 0.95, chunk_size=33, first_k=4):
        assert (a < b).all()
        pairs.update(zip(a.tolist(), b.tolist()))
        union_links(parent, a, b)
    sims = _unit(x) @ _unit(x).T
    assert pairs == {(i, j) for i, j in zip(*np.nonzero(sims >= 0.95)) if i < j}  # every link, not just enough
    roots = [int(r) for r in _roots_of(parent)]
    groups = {}
    for row, root in enumerate(roots):
        groups.setdefault(root, []).append(row)
    found = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    assert found == expected
    if use_faiss:
        assert [g.tolist() for g in near_duplicate_groups(x, 0.95, chunk_size=50, use_faiss=True)] == expected


def _roots_of(parent: np.ndarray) -> np.ndarray:
    roots = parent.copy()
    while not np.array_equal(roots, parent[roots]):
        roots = parent[roots]
    return roots


def test_union_links_handles_stars_chains_and_repeats():
    n = 1000
    parent = np.arange(n, dtype=np.int64)
    chain = np.arange(999, 500, -1)  # links given from the far end, one round hooks only part of them
    union_links(parent, chain, chain - 1)
    union_links(parent, np.full(100, 3), np.arange(100, 200))  # a star
    union_links(parent, np.array([150, 150, 7]), np.array([600, 600, 8]))  # repeats; joins star and chain
    roots = parent.copy()
    while not np.array_equal(roots[roots], roots):
        roots = roots[roots]
    assert len(set(roots[[3, 100, 199, 150, 500, 999]].tolist())) == 1
    assert roots[7] == roots[8] == 7 and roots[0] == 0 and roots[250] == 250


def test_bad_arguments_are_explained():
    x, _ = planted()
    with pytest.raises(InputError, match="threshold"):
        near_duplicate_groups(x, 1.5)
    with pytest.raises(InputError, match="chunk_size"):
        near_duplicate_groups(x, 0.9, chunk_size=0)
    with pytest.raises(InputError, match="non-empty"):
        near_duplicate_groups(np.zeros((0, 8), np.float32), 0.9)


@pytest.fixture()
def embed_output(tmp_path):
    """An `embed`-format folder (embeddings.npy + ids.txt) over real image files, with planted duplicates."""
    x, expected = planted()
    images = tmp_path / "images"
    (images / "相册").mkdir(parents=True)
    ids = []
    rng = np.random.default_rng(1)
    for row in range(len(x)):
        image_id = f"相册/图片{row:03d}.png" if row % 2 else f"img{row:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / image_id)
        ids.append(image_id)
    out = tmp_path / "embedded"
    out.mkdir()
    np.save(out / "embeddings.npy", 3.0 * x)  # not normalised, as `embed` writes by default
    (out / "ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    return out, images, ids, expected


def test_dedup_writes_tsv_json_and_a_picture_with_chinese(embed_output):
    out, images, ids, expected = embed_output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = dedup(str(out), 0.95, images=str(images), chunk_size=64)
    assert not [w for w in caught if "missing from font" in str(w.message)], [str(w.message) for w in caught]
    assert result.groups == expected and result.duplicates == sum(len(g) - 1 for g in expected)
    target = out / "dedup"
    lines = (target / "groups.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "group\trow\tid\tcosine_to_first"
    rows = [line.split("\t") for line in lines[1:]]
    assert [[int(r[1]) for r in rows if int(r[0]) == g] for g in range(len(expected))] == expected
    assert all(r[2] == ids[int(r[1])] for r in rows)
    first = {r[0]: r for r in reversed(rows)}
    assert all(float(first[g][3]) == pytest.approx(1.0, abs=1e-6) for g in first)
    report = json.loads((target / "groups.json").read_text(encoding="utf-8"))
    assert report["groups_found"] == len(expected) and report["images"] == len(ids)
    assert [[m["row"] for m in g["members"]] for g in report["groups"]] == expected
    assert report["groups"][0]["members"][1]["id"] == ids[10]
    with Image.open(target / "groups.png") as picture:
        assert picture.format == "PNG" and picture.width > 400 and picture.height > 300
    assert result.picture == target / "groups.png" and "no CJK font" not in result.summary()


def test_dedup_command_line(embed_output, tmp_path):
    out, images, _, expected = embed_output
    args = console_command("dedup", str(out), "--threshold", "0.95", "--out", str(tmp_path / "d"))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(expected)} groups of near-duplicates" in proc.stdout and "pass --images" in proc.stdout
    assert not (tmp_path / "d" / "groups.png").exists()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    proc = subprocess.run(args + ["--overwrite", "--images", str(images), "--threshold", "0.999"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "threshold 0.999: 1 group of near-duplicates (1 image beyond" in proc.stdout, proc.stdout
    assert json.loads((tmp_path / "d" / "groups.json").read_text())["groups_found"] == 1
    bad = subprocess.run(console_command("dedup", str(images)), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is not an `ernievil2 embed` output" in bad.stderr


def test_dedup_refuses_to_overwrite(embed_output):
    out, *_ = embed_output
    dedup(str(out), 0.95)
    with pytest.raises(OutputExistsError):
        dedup(str(out), 0.95)


MEMORY_ROWS, MEMORY_DIM = 40_000, 32
_MEMORY_PROBE = """
import resource, sys, numpy as np
from ernievil2torch.apps.dedup import near_duplicate_groups
array = np.load(sys.argv[1], mmap_mode="r")
if sys.argv[2] == "run":
    groups = near_duplicate_groups(array, 0.95, chunk_size=2048)
    print(len(groups), sum(len(g) for g in groups))
else:
    np.asarray(array[:2048]) @ np.asarray(array[:2048]).T
    print(0, 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_bounded_on_a_gallery_whose_matrix_would_need_6_gb(tmp_path):
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((MEMORY_ROWS, MEMORY_DIM)))
    x[MEMORY_ROWS - 1] = x[0]  # a duplicate pair as far apart as possible
    x[20_000] = x[12]
    np.save(tmp_path / "big.npy", x)
    full_matrix_gib = MEMORY_ROWS ** 2 * 4 / 2 ** 30
    peaks = {}
    for mode in ("baseline", "run"):
        proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / "big.npy"), mode],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        counts, peak = proc.stdout.split("\n")[:2]
        peaks[mode] = int(peak) / 1024  # MiB (ru_maxrss is in KiB on Linux)
        if mode == "run":
            assert counts == "2 4"
    extra = peaks["run"] - peaks["baseline"]
    print(f"dedup of {MEMORY_ROWS}x{MEMORY_DIM}: peak RSS {peaks['run']:.0f} MiB, {extra:.0f} MiB above the "
          f"baseline; the full matrix would be {full_matrix_gib:.1f} GiB")
    assert extra < 512, peaks
