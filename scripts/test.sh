#!/usr/bin/env bash
# One command, fresh machine: set up every environment and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export ERNIEVIL2_REQUIRE_ORACLES=${ERNIEVIL2_REQUIRE_ORACLES:-1}  # oracle tests fail, not skip, when unavailable
# The full-size cases need about 6 GB of temporary space at once (shared checkpoints plus the largest single test):
# say so before a 15-minute run rather than fail in its last minute.
.venv/bin/python - <<'PY'
import shutil, sys, tempfile
need_gb, root = 8, tempfile.gettempdir()
free_gb = shutil.disk_usage(root).free / 1e9
if free_gb < need_gb:
    sys.exit(f"scripts/test.sh: {root} has {free_gb:.1f} GB free; the suite needs about {need_gb} GB (set TMPDIR to a larger disk)")
PY
exec .venv/bin/python -m pytest tests "$@"
