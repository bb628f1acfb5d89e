#!/usr/bin/env bash
# Create the virtual environments this project uses. Idempotent: re-running only installs what is missing.
#   bash scripts/setup.sh          -> .venv with the runtime + Paddle (for check.py)
#   bash scripts/setup.sh --dev    -> also test tools, and .venv-paddlenlp (the PaddleNLP oracle)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
quiet=(-q --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/pip install "${quiet[@]}" -r requirements-dev.txt
  .venv/bin/pip install "${quiet[@]}" --no-deps -e .
  if [ ! -x .venv-paddlenlp/bin/python ]; then
    "$PYTHON" -m venv .venv-paddlenlp
  fi
  .venv-paddlenlp/bin/pip install "${quiet[@]}" -r requirements-oracle.txt
else
  .venv/bin/pip install "${quiet[@]}" -r requirements.txt -r requirements-paddle.txt
  .venv/bin/pip install "${quiet[@]}" --no-deps -e .
fi
