"""Loopback load test of ``ernievil2 serve``: concurrent clients, good and bad requests mixed, bounded.

    python benchmarks/serve_load.py                       # 8 clients x 200 requests, full-size model (the figures)
    python benchmarks/serve_load.py --quick               # 4 clients x 25 requests, 2-layer model (a smoke run)
    python benchmarks/serve_load.py --write               # also write benchmarks/serve_load.md (sealed)
    python benchmarks/serve_load.py --library --rows 1000000 --workdir DIR --forms db uri --write
                                                          # serve --db, --uri over a library: serve_load_library.py

A synthetic checkpoint (random weights: speed only, the results mean nothing) is converted, a gallery of generated
images is embedded with ``ernievil2 embed``, and ``ernievil2 serve`` is started as a user would (a subprocess on
127.0.0.1, port 0). Each client thread keeps one HTTP/1.1 connection and sends a fixed schedule: text searches,
image searches (an upload), text embeddings and gallery images, with every ``--bad-every``-th request a bad one
(missing/invalid parameters, unknown rows, path traversal, non-image and truncated uploads, a decompression-bomb
header, malformed JSON, an oversized body). Each request has an expected status; the run fails (exit 1) on any
5xx, any unexpected status, any dropped request (connection error or timeout) or when ``--deadline`` passes first.
Nothing leaves the machine: the server listens on loopback only and the clients connect there.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from repo import ROOT, load_file
from stamp import seal

from ernievil2torch.apps.embed import embed
from ernievil2torch.config import base_config, tiny224_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.verify.synthetic import write_synthetic_pdparams, write_synthetic_vocab

_serve_helpers = load_file("tests/serve_helpers.py")  # the serve tests' server process and hostile uploads
QUERIES = _serve_helpers.QUERIES
ServerProcess = _serve_helpers.ServerProcess
png_header_only = _serve_helpers.png_header_only

REPORT = ROOT / "benchmarks" / "serve_load.md"
UPLOAD_LIMIT_MB = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the site: model, gallery, server -------------------------------------------------------------------------------
def build_model(work: Path, size: str) -> Path:
    """A synthetic model (random weights, marked as such) of ``size`` ("base" or "tiny": 2 layers, 224 px),
    converted into ``work / "model"`` as ``convert.py`` would."""
    config = base_config() if size == "base" else tiny224_config()
    source = write_synthetic_pdparams(work / f"synthetic_{size}.pdparams", config, "official", seed=0)
    model = work / "model"
    convert_checkpoint(source, model, vocab=write_synthetic_vocab(work / "vocab.txt"))
    source.unlink()
    return model


def build_site(work: Path, size: str, n_images: int) -> Tuple[Path, Path, Path]:
    """A converted synthetic model, ``n_images`` generated images and their ``embed`` output."""
    model = build_model(work, size)
    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_images):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        pixels = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((w, h)).save(images / f"{i:05d}.jpg", quality=85)
    gallery = work / "gallery"
    embed(str(images), str(model), str(gallery), kind="image", batch_size=16, num_workers=0, progress=False)
    return model, gallery, images


def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None, conn: Optional[http.client.HTTPConnection] = None,
            timeout: float = 120) -> Tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


# ---- the schedule ---------------------------------------------------------------------------------------------------
@dataclass
class Call:
    kind: str
    method: str
    path: str
    body: Optional[bytes]
    headers: Dict[str, str]
    expect: int
    fresh_connection: bool = False  # a request the server may answer before reading its body: own connection


def multipart(field: str, name: str, data: bytes, content_type: str = "image/jpeg") -> Tuple[bytes, Dict[str, str]]:
    boundary = "ernievil2loadtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def bad_calls(uploads: List[bytes]) -> List[Call]:
    """One of each bad request, with the status it must get."""
    json_type = {"Content-Type": "application/json"}
    truncated = uploads[0][: len(uploads[0]) // 3]
    oversized = np.random.default_rng(1).integers(0, 256, UPLOAD_LIMIT_MB * 1024 * 1024 + 4096, np.uint8).tobytes()
    calls = [
        Call("bad: missing q", "GET", "/v1/search?k=5", None, {}, 422),
        Call("bad: k=0", "GET", "/v1/search?k=0&q=" + urllib.parse.quote("猫"), None, {}, 422),
        Call("bad: k=5000", "GET", "/v1/search?k=5000&q=" + urllib.parse.quote("猫"), None, {}, 422),
        Call("bad: row -1", "GET", "/v1/images/-1", None, {}, 404),
        Call("bad: huge row", "GET", "/v1/images/123456789012345678901234567890", None, {}, 404),
        Call("bad: traversal", "GET", "/v1/images/..%2F..%2F..%2Fetc%2Fpasswd", None, {}, 404),
        Call("bad: malformed JSON", "POST", "/v1/embed/text", b'{"texts": ["a",', json_type, 422),
        Call("bad: texts not strings", "POST", "/v1/embed/text", b'{"texts": [1, 2]}', json_type, 422),
    ]
    for kind, data, content_type, expect in (("bad: non-image upload", b"hello, not an image", "image/png", 422),
                                             ("bad: truncated upload", truncated, "image/jpeg", 422),
                                             ("bad: bomb header", png_header_only(30000, 30000), "image/png", 413)):
        body, headers = multipart("file", "x.png", data, content_type)
        calls.append(Call(kind, "POST", "/v1/search/image?k=5", body, headers, expect))
    body, headers = multipart("file", "big.jpg", oversized)
    calls.append(Call("bad: oversized upload", "POST", "/v1/search/image?k=5", body,
                      dict(headers, Connection="close"), 413, fresh_connection=True))
    return calls


def good_call(i: int, uploads: List[bytes], n_rows: int) -> Call:
    rotation = i % 4
    if rotation == 0:
        q = QUERIES[i % len(QUERIES)]
        return Call("text search", "GET", f"/v1/search?k=10&q={urllib.parse.quote(q)}", None, {}, 200)
    if rotation == 1:
        body, headers = multipart("file", "query.jpg", uploads[i % len(uploads)])
        return Call("image search", "POST", "/v1/search/image?k=10", body, headers, 200)
    if rotation == 2:
        texts = [QUERIES[(i + j) % len(QUERIES)] for j in range(4)]
        return Call("embed 4 texts", "POST", "/v1/embed/text", json.dumps({"texts": texts}).encode(),
                    {"Content-Type": "application/json"}, 200)
    return Call("gallery image", "GET", f"/v1/images/{i % n_rows}", None, {}, 200)


def schedule(client: int, count: int, bad_every: int, good: Callable[[int], Call], bad: List[Call]) -> List[Call]:
    """Client ``client``'s ``count`` calls: ``good(number)`` for a request's number over all clients, every
    ``bad_every``-th one taken from ``bad`` in turn instead."""
    calls = []
    for i in range(count):
        number = client * count + i
        calls.append(bad[(number // bad_every) % len(bad)] if bad_every and (i + 1) % bad_every == 0
                     else good(number))
    return calls


# ---- running and reporting ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    kind: str
    expect: int
    status: Optional[int]  # None: dropped (connection error or timeout)
    seconds: float
    error: str = ""


def run_client(port: int, calls: List[Call], deadline: float, out: List[Outcome], timeout: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    for call in calls:
        if time.monotonic() > deadline:
            return
        start = time.perf_counter()
        try:
            status, _ = request(port, call.method, call.path, call.body, call.headers, timeout=timeout,
                                conn=None if call.fresh_connection else conn)
            out.append(Outcome(call.kind, call.expect, status, time.perf_counter() - start))
        except (OSError, http.client.HTTPException) as exc:
            out.append(Outcome(call.kind, call.expect, None, time.perf_counter() - start, repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.close()


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def drive(port: int, plans: List[List[Call]], deadline_s: float, timeout: float,
          warmup: Sequence[Call]) -> Tuple[List[Outcome], float, dict]:
    """Send ``warmup`` (not counted: first-call costs stay out of the percentiles), then every plan on its own
    client thread and connection; returns the outcomes, the wall time of the client phase and ``/healthz``'s
    answer after it (a failed health check is one more outcome, an unexpected status)."""
    for call in warmup:
        request(port, call.method, call.path, call.body, call.headers, timeout=timeout)
    outcomes: List[Outcome] = []
    deadline = time.monotonic() + deadline_s
    threads = [threading.Thread(target=run_client, args=(port, plan, deadline, outcomes, timeout)) for plan in plans]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    status, body = request(port, "GET", "/healthz", timeout=timeout)
    if status != 200:
        outcomes.append(Outcome("healthz after the run", 200, status, 0.0))
    return outcomes, wall, json.loads(body) if status == 200 else {}


def passed(summary: Dict[str, object]) -> bool:
    """The pass line: every planned request answered, none a 5xx, none with another status than expected."""
    return not (summary["server_errors"] or summary["dropped"] or summary["unexpected"]
                or summary["done"] != summary["planned"])


def summarize(outcomes: List[Outcome], planned: int, wall: float, health: dict) -> Dict[str, object]:
    by_kind: Dict[str, List[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    statuses = Counter(o.status for o in outcomes)
    return {
        "planned": planned, "done": len(outcomes), "wall_s": wall, "req_per_s": len(outcomes) / wall if wall else 0,
        "p50_ms": 1000 * percentile([o.seconds for o in outcomes], 50),
        "p99_ms": 1000 * percentile([o.seconds for o in outcomes], 99),
        "server_errors": sum(n for s, n in statuses.items() if s is not None and s >= 500),
        "dropped": statuses.get(None, 0), "unexpected": sum(1 for o in outcomes if o.status not in (o.expect, None)),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "kinds": {kind: {"count": len(items), "expect": items[0].expect,
                         "got": dict(Counter(str(o.status) for o in items)),
                         "p50_ms": 1000 * percentile([o.seconds for o in items], 50),
                         "p99_ms": 1000 * percentile([o.seconds for o in items], 99)}
                  for kind, items in sorted(by_kind.items(), key=lambda kv: (kv[0].startswith("bad"), kv[0]))},
        "batching": health.get("batching", {}), "errors": [o.error for o in outcomes if o.error][:5],
    }


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", load average %.1f / %.1f / %.1f (1 / 5 / 15 min, at the end: other work on the machine counts)" \
        % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}{load}")


def result_tables(summary: Dict[str, object]) -> List[str]:
    """The run's line (requests, req/s, p50/p99, 5xx, dropped, unexpected, passed or FAILED) and the table per
    request kind."""
    lines = [
        "| requests | wall | req/s | p50 | p99 | 5xx | dropped | unexpected status | result |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {summary['done']} of {summary['planned']} | {summary['wall_s']:.1f} s | {summary['req_per_s']:.1f} | "
        f"{summary['p50_ms']:.0f} ms | {summary['p99_ms']:.0f} ms | {summary['server_errors']} | "
        f"{summary['dropped']} | {summary['unexpected']} | {'passed' if passed(summary) else 'FAILED'} |",
        "",
        "| request kind | count | expected | got | p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in summary["kinds"].items():
        got = ", ".join(f"{status}: {n}" for status, n in sorted(row["got"].items()))
        lines.append(f"| {kind} | {row['count']} | {row['expect']} | {got} | {row['p50_ms']:.0f} ms | "
                     f"{row['p99_ms']:.0f} ms |")
    return lines


def batching_line(summary: Dict[str, object]) -> str:
    text = summary["batching"].get("text", {})
    image = summary["batching"].get("image", {})
    return (f"Micro-batching (server counters after the run): text queries {text.get('items', 0)} in "
            f"{text.get('batches', 0)} model calls (mean {text.get('mean_batch', 0)}, largest "
            f"{text.get('largest_batch', 0)}); images {image.get('items', 0)} in {image.get('batches', 0)} "
            f"calls (mean {image.get('mean_batch', 0)}, largest {image.get('largest_batch', 0)}). "
            "`/healthz` answered after the run.")


def render(summary: Dict[str, object], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Service under load (`ernievil2 serve`, loopback)",
        "",
        "Generated by `benchmarks/serve_load.py` (random weights: speed only); every number below comes from one run "
        "of:",
        "",
        f"    {command}",
        "",
        f"Machine: {machine()}. Model: {'full-size' if args.size == 'base' else '2-layer'} synthetic, fp32, CPU; "
        f"gallery {args.images} images; {args.clients} clients x {args.requests} requests, every {args.bad_every}th "
        f"a bad one; server --max_batch {args.max_batch} --max_wait_ms {args.max_wait_ms}.",
        "",
        *result_tables(summary),
        "",
        batching_line(summary),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 clients x 25 requests, 2-layer model, 40 images")
    ap.add_argument("--size", choices=("base", "tiny"), default=None,
                    help="model size (default base; tiny with --quick)")
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--requests", type=int, default=None, help="requests per client")
    ap.add_argument("--bad-every", type=int, default=5, help="every Nth request of a client is a bad one")
    ap.add_argument("--images", type=int, default=None, help="gallery size")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole client phase")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per request")
    ap.add_argument("--write", action="store_true", help=f"write the report, sealed, to {REPORT.relative_to(ROOT)}")
    ap.add_argument("--json", type=str, default=None, help="also write the summary as JSON here")
    library = ap.add_argument_group("library mode (serve --db / --uri over a synthetic photo library)")
    library.add_argument("--library", action="store_true",
                         help="load-test `serve --db` and/or --uri (--forms) over a library of --rows rows instead "
                              "of a gallery; --write then writes benchmarks/serve_load_library.md")
    library.add_argument("--rows", type=int, default=1_000_000, help="library rows (default 1,000,000)")
    library.add_argument("--forms", nargs="+", choices=("db", "uri"), default=["db"],
                         help="db: `serve --db`, Milvus Lite embedded in the service; uri: `serve --uri` against a "
                              "`milvus-lite server` process this script starts on loopback; `--forms db uri`: one "
                              "run of each, one report (default db)")
    library.add_argument("--workdir", type=str, default=None,
                         help="where the library is built and kept: a later run with the same --rows and --size "
                              "reuses it (default: a temporary folder, deleted after the run)")
    library.add_argument("--real-photos", type=int, default=300,
                         help="rows that are real JPEGs with EXIF dates (thumbnails, uploads); the rest are stubs")
    library.add_argument("--uri-serves-db", action="store_true",
                         help="the uri form's `milvus-lite server` opens the database the db form loaded (one load "
                              "instead of two; the uri load path itself is then not timed): needs --forms db uri")
    library.add_argument("--db-searches", type=int, default=2,
                         help="the service's --db_searches: photo-library searches at a time (default 2, its own)")
    args = ap.parse_args()
    if args.uri_serves_db and args.forms != ["db", "uri"]:
        ap.error("--uri-serves-db needs --forms db uri (the db form loads the database the server then opens)")
    args.size = args.size or ("tiny" if args.quick else "base")
    args.clients = args.clients or (4 if args.quick else 8)
    args.requests = args.requests or (25 if args.quick else 200)
    args.images = args.images or (40 if args.quick else 200)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    if args.library:
        if args.rows < 1 or args.real_photos < 1 or args.clients < 1 or args.requests < 1:
            ap.error("--rows, --real-photos, --clients and --requests must be at least 1")
        from serve_load_library import run_library  # noqa: E402 (its own module: it imports this one)

        for summary in run_library(args, command):
            exit_on_failure(summary)
        return

    with tempfile.TemporaryDirectory(prefix="ernievil2-load-") as tmp:
        work = Path(tmp)
        log(f"building a {args.size} synthetic model and a gallery of {args.images} images in {work}")
        model, gallery, images = build_site(work, args.size, args.images)
        uploads = [(images / f"{i:05d}.jpg").read_bytes() for i in range(min(8, args.images))]
        args_serve = [str(model), "--gallery", str(gallery), "--images", str(images), "--host", "127.0.0.1",
                      "--port", "0", "--log_level", "warning", "--max_upload_mb", str(UPLOAD_LIMIT_MB),
                      "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms)]
        with ServerProcess(args_serve, startup_timeout=600) as server:
            log(f"server on 127.0.0.1:{server.port}; {args.clients} clients x {args.requests} requests")
            bad = bad_calls(uploads)
            plans = [schedule(c, args.requests, args.bad_every, lambda n: good_call(n, uploads, args.images), bad)
                     for c in range(args.clients)]
            outcomes, wall, health = drive(server.port, plans, args.deadline, args.timeout, plans[0][:4])
    summary = summarize(outcomes, args.clients * args.requests, wall, health)
    publish(render(summary, args, command), summary, args, REPORT, command)
    exit_on_failure(summary)


def publish(text: str, summary: Dict[str, object], args: argparse.Namespace, report: Path, command: str) -> None:
    """Print the report; with ``--json`` write the summary, with ``--write`` seal the report into ``report``."""
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.write:
        report.write_text(seal(text + "\n", "benchmarks/serve_load.py", command), encoding="utf-8")
        log(f"wrote {report.relative_to(ROOT)}")


def exit_on_failure(summary: Dict[str, object]) -> None:
    """Say FAILED and exit 1 unless the run :func:`passed`."""
    if not passed(summary):
        log(f"FAILED: {summary['server_errors']} 5xx, {summary['dropped']} dropped, {summary['unexpected']} "
            f"unexpected, {summary['done']}/{summary['planned']} done; errors: {summary['errors']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
