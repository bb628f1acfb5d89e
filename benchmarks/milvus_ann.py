"""Approximate search in Milvus Lite against exact search: recall@10 and per-query latency, unfiltered and filtered.

Vectors with the cluster structure of real photo embeddings, not uniform noise: ``--clusters`` centres (unit
vectors in ``--dim`` dimensions); each row is a centre plus Gaussian noise scaled so that a row's cosine to its own
centre is about ``--spread`` (0.75: photos of one scene or subject), normalised; cluster sizes follow a Zipf law
(a few large albums, many small ones). Queries are fresh draws from the same mixture (not rows of the collection).
Metadata per row: ``folder`` (each cluster a folder: a selective filter holds about 1% of the rows) and
``taken_ts`` (uniform over ten years: a month-long range holds about 1%), both also in indexed scalar fields as
``ernievil2 index`` writes them (``FILTER_FIELDS``), so filters cost an index lookup. Rows go in by ``upsert``
in batches of 5,000, as ``index`` and ``index --from_embeddings`` write them.

Filtered searches are measured two ways: Milvus Lite's own HNSW search with the filter (``EXACT_FILTER_ROWS``
set to 0), and what ``MilvusBackend`` does when the filter keeps at most ``EXACT_FILTER_ROWS`` rows (reads those
rows' vectors and ranks them exactly).

For each setting: recall@10 = |ANN top-10 ∩ exact top-10| / 10 averaged over the queries (exact: FAISS
``IndexFlatIP`` over the same rows, or over the filtered rows), and the latency of one query at a time through
pymilvus and Milvus Lite's gRPC server in this process, as ``serve --db`` searches. ``--write`` seals the report
into ``benchmarks/milvus_ann.md``.
"""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from environment import machine_info
from repo import ROOT
from stamp import seal

REPORT = ROOT / "benchmarks" / "milvus_ann.md"
YEARS = 10 * 365 * 86400
START_TS = 1_500_000_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, spread: float):
    """``n`` unit rows drawn from the mixture of ``centres`` (Zipf-sized), and each row's cluster."""
    weights = 1.0 / np.arange(1, len(centres) + 1) ** 0.8
    labels = rng.choice(len(centres), size=n, p=weights / weights.sum())
    sigma = np.sqrt((1 - spread ** 2) / spread ** 2 / dim)  # noise norm / centre norm = tan(arccos(spread))
    rows = centres[labels] + rng.standard_normal((n, dim)).astype(np.float32) * np.float32(sigma)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), labels


def exact_topk(queries: np.ndarray, rows: np.ndarray, k: int):
    import faiss

    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    latencies = []
    found = []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None, :], k)
        latencies.append(time.perf_counter() - started)
        found.append(ids[0])
    return np.stack(found), np.asarray(latencies)


def percentiles(latencies: Sequence[float]) -> str:
    values = np.asarray(latencies) * 1000
    return f"{np.percentile(values, 50):.2f} | {np.percentile(values, 99):.2f}"


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.75)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--filtered_queries", type=int, default=50, help="queries per filtered setting")
    parser.add_argument("--filter_ef", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--write", action="store_true", help=f"write {REPORT.relative_to(ROOT)} (sealed)")
    args = parser.parse_args(argv)
    command = "python benchmarks/milvus_ann.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    import resource

    import psutil

    from ernievil2torch.apps.index.catalog import FILTER_FIELDS
    from ernievil2torch.retrieval import milvus
    from ernievil2torch.retrieval.backends import Range, Under
    from ernievil2torch.retrieval.milvus import MilvusBackend

    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    sections: List[str] = []
    for n in args.rows:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        rows, labels = clustered(rng, n, args.dim, centres, args.spread)
        queries, _ = clustered(rng, args.queries, args.dim, centres, args.spread)
        taken = rng.integers(START_TS, START_TS + YEARS, n)
        folder = int(np.argsort(np.bincount(labels, minlength=args.clusters))[::-1][20])  # a folder of ~1%
        month = (START_TS + YEARS // 2, START_TS + YEARS // 2 + 30 * 86400)
        filters: Dict[str, tuple] = {
            "none": (None, np.ones(n, bool)),
            f"folder (one cluster, {np.mean(labels == folder):.1%} of rows)": (
                {"folder": Under(f"c{folder}")}, labels == folder),
            f"date range (30 days, {np.mean((taken >= month[0]) & (taken <= month[1])):.1%} of rows)": (
                {"taken_ts": Range(*month)}, (taken >= month[0]) & (taken <= month[1])),
        }
        with tempfile.TemporaryDirectory(prefix="milvus-ann-") as tmp:
            log(f"{n} rows: inserting")
            backend = MilvusBackend(args.dim, str(Path(tmp) / "bench.db"), collection="bench", index_type="HNSW",
                                    scalar_fields=FILTER_FIELDS)
            started = time.perf_counter()
            for start in range(0, n, 5000):
                end = min(n, start + 5000)
                backend.upsert(rows[start:end], [str(i) for i in range(start, end)],
                               [{"folder": f"c{labels[i]}", "taken_ts": int(taken[i])} for i in range(start, end)])
            insert_s = time.perf_counter() - started
            log(f"inserted in {insert_s:.0f} s; flushing (builds the HNSW index)")
            started = time.perf_counter()
            backend.client.flush("bench")
            backend.client.release_collection("bench")
            backend.client.load_collection("bench")
            backend.search(queries[:1], 10)
            build_s = time.perf_counter() - started
            rss = psutil.Process().memory_info().rss / 2 ** 30
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            table = [f"## {n:,} rows of {args.dim}-d, {args.clusters} clusters, {args.queries} queries", "",
                     f"Upsert {insert_s:.0f} s ({n / insert_s:,.0f} rows/s through gRPC), flush + index build + "
                     f"load {build_s:.0f} s; this process (client + Milvus Lite) holds {rss:.2f} GiB RSS after "
                     f"loading (peak so far {peak:.2f} GiB, which includes the benchmark's own copy of the rows: "
                     f"{rows.nbytes / 2 ** 30:.2f} GiB).", "",
                     "| filter | search | recall@10 | p50 ms | p99 ms |", "|---|---|---|---|---|"]
            # every exact answer first, then the rows are dropped: at a million rows Milvus Lite's filtered
            # searches allocate gigabytes per query, and the benchmark's own copy must not be what runs out
            exact = {}
            for name, (where, keep) in filters.items():
                kept = np.flatnonzero(keep)
                asked = queries if where is None else queries[:args.filtered_queries]
                truth, flat_latency = exact_topk(asked, rows if where is None else rows[kept], 10)
                exact[name] = (asked, kept[truth], flat_latency)
            del rows
            gc.collect()
            for name, (where, _) in filters.items():
                asked, truth, flat_latency = exact[name]
                table.append(f"| {name} | exact (FAISS IndexFlatIP, in memory) | 1.000 | {percentiles(flat_latency)} |")
                settings = [(ef, 0) for ef in (args.ef if where is None else args.filter_ef)]
                if where is not None:
                    settings.append((args.ef[-1], milvus.EXACT_FILTER_ROWS))
                for ef, exact_rows in settings:
                    backend.search_params = {"ef": ef}
                    default_exact, milvus.EXACT_FILTER_ROWS = milvus.EXACT_FILTER_ROWS, exact_rows
                    latencies, recalls = [], []
                    for query, expected in zip(asked, truth):
                        began = time.perf_counter()
                        hits, = backend.search(query[None, :], 10, where=where)
                        latencies.append(time.perf_counter() - began)
                        recalls.append(len({int(h.id) for h in hits} & set(expected.tolist())) / 10)
                    milvus.EXACT_FILTER_ROWS = default_exact
                    how = (f"Milvus Lite HNSW M=16 efConstruction=200 ef={ef}" if not exact_rows else
                           f"MilvusBackend: exact over the filtered rows (at most {exact_rows})")
                    table.append(f"| {name} | {how} ({len(asked)} queries) | {np.mean(recalls):.3f} | "
                                 f"{percentiles(latencies)} |")
                    log(f"{name} ef={ef}: recall {np.mean(recalls):.3f}")
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            table += ["", f"Peak RSS of this process over the whole size: {peak:.2f} GiB."]
            sections.append("\n".join(table))
            backend.client.close()
            left = [f"{rows_left:,}" for rows_left in args.rows[len(sections):]]
            report(args, command, load_before, sections, left)


def report(args: argparse.Namespace, command: str, load_before: str, sections: List[str], left: List[str]) -> None:
    """Print the report of the sizes measured so far and, with ``--write``, seal it (after each size: a run that
    dies at a later size keeps what the earlier ones measured, and says which sizes it did not reach)."""
    info = machine_info(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    load = f"{load_before} -> {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    pending = [f"Not reached yet when this was written: {', '.join(left)} rows (the run goes on, or stopped).", ""]
    text = "\n".join([
        "# Milvus Lite approximate search against exact search", "",
        f"Command: `{command}`. Machine: {info['cpu']}, {info['cpus']} logical CPUs ({info['os']}); load average "
        f"{load} (shared machine: latencies are upper bounds).", "",
        (__doc__ or "").split("\n\n", 1)[1].strip(), "", *(pending if left else []), *[s + "\n" for s in sections]])
    print(text)
    if args.write:
        REPORT.write_text(seal(text, "benchmarks/milvus_ann.py", command), encoding="utf-8")
        log(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
