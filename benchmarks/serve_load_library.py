"""Library mode of the loopback load run (``python benchmarks/serve_load.py --library``): ``ernievil2 serve --db``
and/or ``--uri`` (``--forms``) over a photo library of ``--rows`` rows, concurrent clients, hostile requests mixed
in, and the resident memory of every process involved.

    python benchmarks/serve_load.py --library --rows 1000000 --workdir DIR --forms db uri --write  # the figures
    python benchmarks/serve_load.py --library --rows 3000 --size tiny --clients 4 --requests 40    # a quick check

The library (``library_site.py``: clustered vectors, 1000 nested album folders of Zipf sizes, dates over ten
years, a few hundred real JPEGs) is built once per ``--workdir`` and loaded with the real ``ernievil2 index MODEL
--from_embeddings OUT --db ...`` (each form into its own database, once per ``--workdir``); for ``uri`` a
``milvus-lite server`` process is started on loopback and both the load and the service talk to it. Then
``ernievil2 serve MODEL --db ...`` (or ``--uri``) runs in its own process (port 0, loopback) and each client
thread sends its schedule: text searches (plain, filtered by an album folder, by a date range, a later page),
more-like-this by id, image uploads, thumbnails of real photos, the folder list, and every ``--bad-every``-th
request a hostile one with the status it must get. The run fails (exit 1, "FAILED" in the report) on any 5xx, any
dropped request, any unexpected status or a deadline passed first, in any form.
``--write`` seals the report of all forms into ``benchmarks/serve_load_library.md`` (the gallery report stays in
``serve_load.md``).
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
                        multipart, passed, publish, result_tables, schedule, summarize)

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


FORMS = {"db": "`serve --db`: Milvus Lite embedded in the service",
         "uri": "`serve --uri`: a `milvus-lite server` process on loopback, the service its client"}


def run_library(args: argparse.Namespace, command: str) -> List[Dict[str, object]]:
    """Build or reuse the library, then for each of ``args.forms`` load it, serve it and drive the clients; print
    (and with ``--write`` seal) one report; returns each form's summary (``serve_load.passed`` decides the exit
    status)."""
    with ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ernievil2-library-")))
        site = build_library(workdir, args.size, args.rows, args.real_photos, log)
        runs = {form: serve_form(site, form, args) for form in args.forms}
    publish(render(runs, site, args, command), {"forms": runs}, args, REPORT, command)
    return list(runs.values())


def serve_form(site: Site, form: str, args: argparse.Namespace) -> Dict[str, object]:
    """One form's run: its database (a ``milvus-lite server`` started here for ``uri``), the load when not done
    before, the service, the clients, the memory of each process; returns the summary."""
    with ExitStack() as stack:
        memory = stack.enter_context(PeakMemory())
        target = ["--db", str(site.part("photos.db"))]
        shared = form == "uri" and args.uri_serves_db  # the server opens the db form's database, loaded already
        if form == "uri":
            server_class = load_file("tests/serve_helpers.py").MilvusLiteServer
            milvus = stack.enter_context(server_class(site.part("photos.db" if shared else "server.db"),
                                                      startup_timeout=1800, stop_timeout=3600))
            memory.watch("milvus-lite server", milvus.process.pid)
            target = ["--uri", milvus.uri]
        load = dict(site.loads["db"], now=False, shared=True) if shared else load_library(site, form, target, log)
        thumbs = site.part("thumbs")  # every run makes its thumbnails anew
        shutil.rmtree(thumbs, ignore_errors=True)
        stack.callback(shutil.rmtree, thumbs, True)
        uploads = [(site.part("photos") / path).read_bytes() for path in site.real_paths[:8]]
        serve_args = [str(site.part("model")), *target, "--thumbnails", str(thumbs), "--host", "127.0.0.1",
                      "--port", "0", "--log_level", "warning", "--max_upload_mb", str(UPLOAD_LIMIT_MB),
                      "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms),
                      "--db_searches", str(args.db_searches)]
        started = time.perf_counter()
        with ServerProcess(serve_args, startup_timeout=3600) as server:
            startup = time.perf_counter() - started
            memory.watch("service", server.proc.pid)
            log(f"{form}: service on 127.0.0.1:{server.port} after {startup:.0f} s; {args.clients} clients x "
                f"{args.requests} requests")
            bad = library_bad_calls(uploads)
            plans = [schedule(c, args.requests, args.bad_every, lambda n: good_call(site, n, uploads), bad)
                     for c in range(args.clients)]
            warmup = [good_call(site, n, uploads) for n in range(len(GOOD_KINDS))]
            outcomes, wall, health = drive(server.port, plans, args.deadline, args.timeout, warmup)
            service = vars(memory.finish("service"))
        server_memory = vars(memory.finish("milvus-lite server")) if form == "uri" else None
    summary = summarize(outcomes, args.clients * args.requests, wall, health)
    if health.get("gallery_size") != site.rows:  # a load lost or cut short: fail, and load again next time
        summary["unexpected"] += 1
        summary["errors"].insert(0, f"the service counts {health.get('gallery_size')} rows, not {site.rows}")
        site.loads.pop(form, None)
        site.save()
    summary.update(form=form, library_rows=health.get("gallery_size"), startup_s=startup, load=load,
                   memory={"service": service, "milvus-lite server": server_memory})
    return summary


def render(runs: Dict[str, Dict[str, object]], site: Site, args: argparse.Namespace, command: str) -> str:
    info = machine_info(0)
    forms = " and ".join(f"`serve --{form}`" for form in runs)
    lines = [
        f"# Service under load on a photo library of {site.rows:,} rows ({forms}, loopback)", "",
        "Generated by `benchmarks/serve_load.py --library` (random weights: speed only); every number below comes "
        "from one run of:", "", f"    {command}", "",
        f"Machine: {info['cpu']}, {info['cpus']} logical CPUs ({info['os']}), load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (a shared machine counts other work). "
        f"Model: {'full-size' if args.size == 'base' else '2-layer'} synthetic, fp32, CPU; "
        f"{args.clients} clients x {args.requests} requests per form, every {args.bad_every}th a hostile one; "
        f"server --max_batch {args.max_batch} --max_wait_ms {args.max_wait_ms} --db_searches {args.db_searches}.", "",
        f"Library (`benchmarks/library_site.py`): {site.rows:,} rows of {site.dim}-d unit vectors in 1000 clusters "
        f"of Zipf sizes (cosine ~0.75 to their centre, as `benchmarks/milvus_ann.py` draws them), one album folder "
        f"`YEAR/album_NNNN` per cluster, capture dates over ten years; every row a file on disk ({site.real} real "
        f"JPEGs with EXIF dates, the others stubs of 4 bytes) and a row of an `embed` output loaded by `ernievil2 "
        f"index MODEL --from_embeddings OUT --db PATH` (or `--uri URL`). Built in {site.build_seconds:.0f} s "
        f"({'this run' if site.built_now else 'earlier: kept in --workdir'}). Filters sent: folder `{site.album}` "
        f"({site.album_rows:,} rows, {100 * site.album_rows / site.rows:.2f} %), dates {site.date_from} .. "
        f"{site.date_to} ({FILTER_DAYS} days: {site.date_rows:,} rows, {100 * site.date_rows / site.rows:.2f} %)."]
    for form, summary in runs.items():
        load, memory = summary["load"], summary["memory"]
        lines += [
            "", f"## {FORMS[form]}", "",
            ("The `milvus-lite server` opened the database the `--db` form loaded (`--uri-serves-db`: no second "
             "load; the `--uri` load path is exercised by the tests, not timed here); the " if load.get("shared") else
             f"Loaded in {load['seconds']:.0f} s ({'this run' if load.get('now') else 'by an earlier run'}); the ")
            + f"service answered `/healthz` {summary['startup_s']:.0f} s after it was started, counting "
            f"{summary['library_rows']} rows.", "", *result_tables(summary), "",
            *([f"**FAILED**: {'; '.join(summary['errors']) or 'see the tables'}.", ""] if not passed(summary) else []),
            "| process | peak RSS, sampled every 0.5 s (with children) | peak RSS, kernel (VmHWM / wait4) | "
            "at the end |",
            "|---|---|---|---|",
            _memory_row(f"the service (`serve --{form}`), sampled from its first answer", memory["service"])]
        if memory["milvus-lite server"]:
            lines.append(_memory_row("the `milvus-lite server` process, from its start (this run)",
                                     memory["milvus-lite server"]))
        lines += [
            f"| the loader (`index --from_embeddings --{'db' if load.get('shared') else form}`, when the library "
            f"was loaded) | - | {mib(load['peak_rss'])} | - |",
            f"| today's in-memory gallery (`serve MODEL GALLERY IMAGES`) at {site.rows:,} rows: **computed, not "
            f"measured** | - | {gallery_line(site.rows, site.dim)} | - |",
            "", batching_line(summary)]
    return "\n".join(lines)


def gallery_line(rows: int, dim: int) -> str:
    """What today's gallery form holds for ``rows`` vectors, computed: the back end's normalised float32 copy
    (``rows x dim x 4`` bytes) and, from ``FAISS_MIN_ROWS`` rows on with faiss installed, the same again inside
    FAISS's flat index; the ids and per-row metadata dicts come on top (not computed)."""
    from ernievil2torch.retrieval.backends import FAISS_MIN_ROWS

    vectors = rows * dim * 4
    faiss = (f"; with faiss-cpu installed (used from {FAISS_MIN_ROWS:,} rows on) its flat index holds them again: "
             f"{mib(2 * vectors)} in all") if rows >= FAISS_MIN_ROWS else ""
    return (f"{mib(vectors)} of float32 vectors ({rows:,} x {dim} x 4 B){faiss}; plus Python's ids and per-row "
            "metadata dicts (not computed)")


def _memory_row(name: str, entry: Optional[dict]) -> str:
    if entry is None:
        return f"| {name} | - | - | - |"
    children = f" ({entry['children']} children)" if entry["children"] else ""
    return (f"| {name} | {mib(entry['sampled_peak'])}{children} | {mib(entry['kernel_peak'])} | "
            f"{mib(entry['at_end'])} |")
