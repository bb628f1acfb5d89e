"""Benchmark worker: PaddleNLP 2.8.1's ``ErnieViLModel`` (Baidu's code) held in memory, timed call by call.

Runs under the PaddleNLP interpreter (``.venv-paddlenlp``), started by ``benchmarks/run.py``::

    python benchmarks/paddlenlp_worker.py --params state.npz --config config.json --inputs in.npz --out out.npz

* ``--params``: PaddleNLP-layout state (``.npz``); loaded strictly (missing, unexpected or mis-shaped keys exit 2).
* ``--config``: JSON in this project's ``ErnieViL2Config.to_dict()`` layout; the ``ErnieViLConfig`` is built from it
  by ``tests/oracles/paddlenlp_model.py`` (nothing is downloaded).
* ``--inputs``: ``.npz`` with ``pixel_values`` [I,3,S,S] float32 and ``input_ids`` [T,L] int64.
* ``--out``: the features of one call per tower (``image_features``, ``text_features``), written before serving.

The text LayerNorms get the config's epsilon (the official 1e-5): PaddleNLP >= 2.6 builds them with 1e-12, which
would be a different function (see ``../shared/SPEC.md``). Then the worker prints ``ready`` and serves one command
per stdin line: ``image`` or ``text`` runs that tower once on the inputs and prints ``done``; ``quit`` (or end of
input) exits. Threads: ``OMP_NUM_THREADS`` from the parent, set before paddle is imported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from repo import load_file


def build_model(params: str, config: dict):
    """The ``ErnieViLModel`` in eval mode with ``params`` loaded strictly and the official text epsilon."""
    import paddle.nn as nn
    from paddlenlp.transformers import ErnieViLModel

    oracle = load_file("tests/oracles/paddlenlp_model.py")
    model = ErnieViLModel(oracle._build_config(config))
    model.eval()
    state = oracle._load_state(params)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    optional = set() if config.get("has_temperature", True) else {"temperature"}
    problems = [f"missing {k}" for k in sorted(own.keys() - found.keys() - optional)]
    problems += [f"unexpected {k}" for k in sorted(found.keys() - own.keys())]
    problems += [f"{k}: {found[k]} vs {own[k]}" for k in sorted(own.keys() & found.keys()) if found[k] != own[k]]
    if problems:
        print("error: " + "; ".join(problems[:10]), file=sys.stderr)
        raise SystemExit(2)
    live = model.state_dict()
    for key, value in state.items():
        live[key].set_value(np.ascontiguousarray(value, dtype=np.float32))
    for layer in model.text_model.sublayers():
        if isinstance(layer, nn.LayerNorm):
            layer._epsilon = float(config["text"].get("layer_norm_eps", 1e-5))
    return model


def serve(model, pixel_values, input_ids) -> None:
    """Answer ``image`` / ``text`` lines with one timed-by-the-caller call each, until ``quit``."""
    import paddle

    calls = {"image": lambda: model.get_image_features(pixel_values=pixel_values),
             "text": lambda: model.get_text_features(input_ids=input_ids)}
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            return
        with paddle.no_grad():
            calls[command]().numpy()
        print("done", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--params", "--config", "--inputs", "--out"):
        ap.add_argument(name, required=True)
    args = ap.parse_args()
    import paddle

    paddle.set_device("cpu")
    model = build_model(args.params, json.loads(Path(args.config).read_text(encoding="utf-8")))
    with np.load(args.inputs) as z:
        pixel_values = paddle.to_tensor(np.asarray(z["pixel_values"], dtype=np.float32))
        input_ids = paddle.to_tensor(np.asarray(z["input_ids"], dtype=np.int64))
    with paddle.no_grad():
        np.savez(args.out, image_features=model.get_image_features(pixel_values=pixel_values).numpy(),
                 text_features=model.get_text_features(input_ids=input_ids).numpy())
    serve(model, pixel_values, input_ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
