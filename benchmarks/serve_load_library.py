"""Library mode of the loopback load run (``python benchmarks/serve_load.py --library``): ``ernievil2 serve --db``
(or ``--uri``) over a photo library of ``--rows`` rows, concurrent clients, hostile requests mixed in, and the
resident memory of every process involved.

    python benchmarks/serve_load.py --library --rows 1000000 --workdir /data/lib --write          # embedded --db
    python benchmarks/serve_load.py --library --rows 1000000 --workdir /data/lib --uri --write    # a Milvus server
    python benchmarks/serve_load.py --library --rows 3000 --size tiny --clients 4 --requests 40   # a quick check

The library (``library_site.py``: clustered vectors, 1000 nested album folders of Zipf sizes, dates over ten
years, a few hundred real JPEGs) is built once per ``--workdir`` and loaded with the real ``ernievil2 index MODEL
--from_embeddings OUT --db ...``; with ``--uri`` a ``milvus-lite server`` process is started on loopback and both
the load and the service talk to it. Then ``ernievil2 serve MODEL --db ...`` runs in its own process (port 0,
loopback) and each client thread sends its schedule: text searches (plain, filtered by an album folder, by a date
range, a later page), more-like-this by id, image uploads, thumbnails of real photos, the folder list, and every
``--bad-every``-th request a hostile one with the status it must get. The run fails (exit 1, "FAILED" in the
report) on any 5xx, any dropped request, any unexpected status or a deadline passed first. ``--write`` seals the
report into ``benchmarks/serve_load_library.md`` (the gallery report stays in ``serve_load.md``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import urllib.parse
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Optional

from environment import machine_info
from library_site import FILTER_DAYS, Site, build_library, load_library
from peak_memory import PeakMemory, mib
from repo import ROOT, load_file
from serve_load import (QUERIES, UPLOAD_LIMIT_MB, Call, ServerProcess, bad_calls, batching_line, drive, log,
                        multipart, publish, result_tables, schedule, summarize)

REPORT = ROOT / "benchmarks" / "serve_load_library.md"
PAGE = 24  # the page's grid
#: The good requests, in the order each client cycles through them (the folder list once a cycle: a page load).
GOOD_KINDS = ("text search", "text search, folder filter", "text search, date range", "more like this",
              "text search, page 3", "image search (upload)", "thumbnail", "text search", "more like this",
              "text search, folder filter", "thumbnail", "text search, date range", "image search (upload)",
              "text search", "thumbnail", "folder list")


def good_call(site: Site, number: int, uploads: List[bytes]) -> Call:
    """The ``number``-th good request (over all clients) of the cycle :data:`GOOD_KINDS`."""
    kind = GOOD_KINDS[number % len(GOOD_KINDS)]
    text = urllib.parse.urlencode({"q": QUERIES[number % len(QUERIES)], "k": PAGE})
    paths = {"text search": f"/v1/search?{text}",
             "text search, folder filter": f"/v1/search?{text}&" + urllib.parse.urlencode({"folder": site.album}),
             "text search, date range": f"/v1/search?{text}&taken_from={site.date_from}&taken_to={site.date_to}",
             "text search, page 3": f"/v1/search?{text}&offset={2 * PAGE}",
             "more like this": f"/v1/similar/{site.sample_ids[number % len(site.sample_ids)]}?k={PAGE}",
             "thumbnail": f"/v1/thumbs/{site.real_ids[number % len(site.real_ids)]}",
             "folder list": "/v1/folders"}
    if kind == "image search (upload)":
        body, headers = multipart("file", "query.jpg", uploads[number % len(uploads)])
        return Call(kind, "POST", f"/v1/search/image?k={PAGE}", body, headers, 200)
    return Call(kind, "GET", paths[kind], None, {}, 200)


def library_bad_calls(uploads: List[bytes]) -> List[Call]:
    """The gallery run's hostile requests that are not about gallery rows, and the library's own."""
    q = urllib.parse.quote("猫")
    own = [("unknown id", f"/v1/similar/{'f' * 32}", 404), ("malformed id", "/v1/thumbs/not-an-id", 404),
           ("id too long", f"/v1/similar/{'a' * 100}", 422),
           ("photo path traversal", "/v1/photos/..%2F..%2F..%2Fetc%2Fpasswd", 404),
           ("page past the limit", f"/v1/search?k={PAGE}&offset=16380&q={q}", 422),
           ("folder ..", f"/v1/search?q={q}&folder=..%2F..", 422),
           ("bad date", f"/v1/search?q={q}&taken_from=yesterday", 422),
           ("inverted date range", f"/v1/search?q={q}&taken_from=2024-01-02&taken_to=2024-01-01", 422),
           ("negative offset", f"/v1/search?q={q}&offset=-1", 422)]
    shared = [call for call in bad_calls(uploads) if not call.path.startswith("/v1/images/")]
    return shared + [Call(f"bad: {kind}", "GET", path, None, {}, expect) for kind, path, expect in own]


def run_library(args: argparse.Namespace, command: str) -> Dict[str, object]:
    """Build or reuse the library, load it, serve it, drive the clients; print (and with ``--write`` seal) the
    report; returns the summary (``serve_load.passed`` decides the exit status)."""
    key = "uri" if args.uri else "db"
    with ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ernievil2-library-")))
        site = build_library(workdir, args.size, args.rows, args.real_photos, log)
        memory = stack.enter_context(PeakMemory())
        target = ["--db", str(site.part("photos.db"))]
        if args.uri:
            server_class = load_file("tests/serve_helpers.py").MilvusLiteServer
            milvus = stack.enter_context(server_class(site.part("server.db"), startup_timeout=600))
            memory.watch("milvus-lite server", milvus.process.pid)
            target = ["--uri", milvus.uri]
        load = load_library(site, key, target, log)
        thumbs = site.part("thumbs")  # every run makes its thumbnails anew
        shutil.rmtree(thumbs, ignore_errors=True)
        stack.callback(shutil.rmtree, thumbs, True)
        uploads = [(site.part("photos") / path).read_bytes() for path in site.real_paths[:8]]
        serve_args = [str(site.part("model")), *target, "--thumbnails", str(thumbs), "--host", "127.0.0.1",
                      "--port", "0", "--log_level", "warning", "--max_upload_mb", str(UPLOAD_LIMIT_MB),
                      "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms)]
        started = time.perf_counter()
        with ServerProcess(serve_args, startup_timeout=3600) as server:
            startup = time.perf_counter() - started
            memory.watch("service", server.proc.pid)
            log(f"service on 127.0.0.1:{server.port} after {startup:.0f} s; {args.clients} clients x "
                f"{args.requests} requests")
            bad = library_bad_calls(uploads)
            plans = [schedule(c, args.requests, args.bad_every, lambda n: good_call(site, n, uploads), bad)
                     for c in range(args.clients)]
            warmup = [good_call(site, n, uploads) for n in range(len(GOOD_KINDS))]
            outcomes, wall, health = drive(server.port, plans, args.deadline, args.timeout, warmup)
            service = memory.finish("service")
        server_memory = memory.finish("milvus-lite server") if args.uri else None
    summary = summarize(outcomes, args.clients * args.requests, wall, health)
    summary.update(rows=site.rows, library_rows=health.get("gallery_size"), startup_s=startup,
                   memory={"service": vars(service), "milvus-lite server": vars(server_memory) if server_memory
                           else None, "loader": load})
    publish(render(summary, site, args, command, startup, load), summary, args, REPORT, command)
    return summary


def render(summary: Dict[str, object], site: Site, args: argparse.Namespace, command: str, startup: float,
           load: dict) -> str:
    info = machine_info(0)
    form = "--uri (a `milvus-lite server` process on loopback)" if args.uri else "--db (Milvus Lite embedded in it)"
    memory = summary["memory"]
    gallery_bytes = site.rows * site.dim * 4
    lines = [
        f"# Service under load on a photo library of {site.rows:,} rows (`ernievil2 serve {form.split()[0]}`, "
        "loopback)", "",
        "Generated by `benchmarks/serve_load.py --library` (random weights: speed only); every number below comes "
        "from one run of:", "", f"    {command}", "",
        f"Machine: {info['cpu']}, {info['cpus']} logical CPUs ({info['os']}), load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (a shared machine counts other work). "
        f"Model: {'full-size' if args.size == 'base' else '2-layer'} synthetic, fp32, CPU; service {form}; "
        f"{args.clients} clients x {args.requests} requests, every {args.bad_every}th a hostile one; server "
        f"--max_batch {args.max_batch} --max_wait_ms {args.max_wait_ms}.", "",
        f"Library (`benchmarks/library_site.py`): {site.rows:,} rows of {site.dim}-d unit vectors in 1000 clusters "
        f"of Zipf sizes (cosine ~0.75 to their centre, as `benchmarks/milvus_ann.py` draws them), one album folder "
        f"`YEAR/album_NNNN` per cluster, capture dates over ten years; every row a file on disk ({site.real} real "
        f"JPEGs with EXIF dates, the others stubs of 4 bytes), an `embed` output loaded by `{load['command']}`. "
        f"Built in {site.build_seconds:.0f} s ({'this run' if site.built_now else 'earlier: kept in --workdir'}) "
        f"and loaded in {load['seconds']:.0f} s ({'this run' if load.get('now') else 'by an earlier run'}); the "
        f"service answered `/healthz` {startup:.0f} s after it was started, counting {summary['library_rows']} "
        f"rows. Filters sent: folder `{site.album}` "
        f"({site.album_rows:,} rows, {100 * site.album_rows / site.rows:.2f} %), dates {site.date_from} .. "
        f"{site.date_to} ({FILTER_DAYS} days: {site.date_rows:,} rows, {100 * site.date_rows / site.rows:.2f} %).",
        "", *result_tables(summary), "",
        "| process | peak RSS, sampled every 0.5 s (with children) | peak RSS, kernel (VmHWM / wait4) | at the end |",
        "|---|---|---|---|",
        _memory_row(f"the service (`serve {form.split()[0]}`)", memory["service"]),
    ]
    if memory["milvus-lite server"]:
        lines.append(_memory_row("the `milvus-lite server` process (since it started, this run)",
                                 memory["milvus-lite server"]))
    lines += [
        f"| the loader (`index --from_embeddings`, when the library was loaded) | - | {mib(load['peak_rss'])} | - |",
        f"| today's in-memory gallery (`serve MODEL GALLERY IMAGES`) at {site.rows:,} rows: **computed, not "
        f"measured** | - | {mib(gallery_bytes)} of float32 vectors ({site.rows:,} x {site.dim} x 4 B) plus "
        "Python's copies (the ids and their metadata; a FAISS index holds the vectors a second time) | - |",
        "", batching_line(summary)]
    return "\n".join(lines)


def _memory_row(name: str, entry: Optional[dict]) -> str:
    if entry is None:
        return f"| {name} | - | - | - |"
    children = f" ({entry['children']} children)" if entry["children"] else ""
    return (f"| {name} | {mib(entry['sampled_peak'])}{children} | {mib(entry['kernel_peak'])} | "
            f"{mib(entry['at_end'])} |")
