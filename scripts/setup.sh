#!/usr/bin/env bash
# Create the virtual environments this project uses. Idempotent: re-running only installs what is missing.
#   bash scripts/setup.sh          -> .venv with the runtime + Paddle (for check.py)
#   bash scripts/setup.sh --dev    -> also test tools, .venv-paddlenlp (the PaddleNLP oracle), .venv-openclip
#                                     (open_clip + CLIP_benchmark, for the open_clip export test) and, as root on
#                                     Debian, the chromium package for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
quiet=(-q --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The real-browser test of `ernievil2 serve` drives Debian's Chromium (Playwright never downloads a browser).
install_chromium() {
  if [ -x "${ERNIEVIL2_CHROMIUM:-/usr/bin/chromium}" ]; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (apt-get) for the browser test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no chromium at ${ERNIEVIL2_CHROMIUM:-/usr/bin/chromium}; install it (sudo apt-get install chromium)" \
         "or the browser test skips (and fails under ERNIEVIL2_REQUIRE_ORACLES=1)" >&2
  fi
}

if [ "${1:-}" = "--dev" ]; then
  install_chromium
  # torch.compile's CPU backend (tests/modeling/test_fast_paths.py) needs a C++ compiler; under ERNIEVIL2_REQUIRE_ORACLES=1
  # its absence fails the suite rather than skipping the test.
  if ! command -v g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  fi
  .venv/bin/pip install "${quiet[@]}" -r requirements-dev.txt
  .venv/bin/pip install "${quiet[@]}" --no-deps -e .
  if [ ! -x .venv-paddlenlp/bin/python ]; then
    "$PYTHON" -m venv .venv-paddlenlp
  fi
  .venv-paddlenlp/bin/pip install "${quiet[@]}" -r requirements-oracle.txt
  # open_clip + CLIP_benchmark without our package (tests/export/test_open_clip.py runs their own code on our export).
  if [ ! -x .venv-openclip/bin/python ]; then
    "$PYTHON" -m venv .venv-openclip
  fi
  .venv-openclip/bin/pip install "${quiet[@]}" -r requirements-openclip.txt
else
  .venv/bin/pip install "${quiet[@]}" -r requirements.txt -r requirements-paddle.txt
  .venv/bin/pip install "${quiet[@]}" --no-deps -e .
fi
