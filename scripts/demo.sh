#!/usr/bin/env bash
# One command, fresh machine: set up, then run the main job end to end.
# With OPEN_ERNIE_VIL2_BASE_ViT.pdparams (+ vocab.txt) in the repo root it converts and checks the REAL model;
# otherwise it uses a clearly labelled SYNTHETIC full-size checkpoint with random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
if [ -f OPEN_ERNIE_VIL2_BASE_ViT.pdparams ] || [ -f ERNIE_VIL2_BASE_ViT.pdparams ]; then
  src=$(ls OPEN_ERNIE_VIL2_BASE_ViT.pdparams ERNIE_VIL2_BASE_ViT.pdparams 2>/dev/null | head -n 1)
  vocab_arg=(); [ -f vocab.txt ] && vocab_arg=(--vocab vocab.txt)
  $PY convert.py --src "$src" --dst converted/ernie_vil2_base "${vocab_arg[@]}" --overwrite
  $PY check.py logit_check --paddle "$src" --torch converted/ernie_vil2_base
  $PY test.py performance_check --model converted/ernie_vil2_base
else
  echo "No official checkpoint here: running the SYNTHETIC demo (random weights, full size)."
  $PY check.py logit_check --workdir demo
  $PY test.py performance_check --model demo/synthetic_converted
fi
