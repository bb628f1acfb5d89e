#!/usr/bin/env bash
# One command, fresh machine: set up every environment and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export ERNIEVIL2_REQUIRE_ORACLES=${ERNIEVIL2_REQUIRE_ORACLES:-1}  # oracle tests fail, not skip, when unavailable
exec .venv/bin/python -m pytest tests "$@"
