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
