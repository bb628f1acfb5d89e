"""Oracle: run PaddleNLP 2.8.1's ``ErnieViLModel`` on given weights and inputs.

Run under the PaddleNLP interpreter (``.venv-paddlenlp``), as a subprocess of the tests::

    python tests/oracles/paddlenlp_model.py --inputs in.npz --params model_state.pdparams \
        --config config.json --out out.npz [--text-ln-eps 1e-5]

* ``--inputs``: ``.npz`` with ``pixel_values`` [I,3,S,S] float32 and ``input_ids`` [T,L] int64 (pad id 0).
* ``--params``: PaddleNLP-layout state (398 keys at full size): a plain pickle ``{name: ndarray}`` (a ``.pdparams``,
  bookkeeping entries ending in ``@@`` ignored) or an ``.npz``.
* ``--config``: JSON in this project's ``ErnieViL2Config.to_dict()`` layout (``text``, ``vision``,
  ``has_temperature``); the ``ErnieViLConfig`` is built from it in code, nothing is downloaded.
* ``--text-ln-eps``: epsilon forced onto every text ``nn.LayerNorm`` after construction. PaddleNLP >= 2.6 builds the
  text norms with 1e-12 (``ErniePretrainedModel._init_weights`` sets ``_epsilon = 1e-12`` on every LayerNorm when the
  inner ``ErnieModel`` is constructed, and ``ErnieViLModel``'s own hook, which would apply the config's value, skips
  the already-initialised ``ErnieModel``). The official value is 1e-5. Pass ``none`` to keep PaddleNLP's value.

Writes ``--out`` (``.npz``): ``image_features`` (``get_image_features``: ``ln_post`` of the class token, no
projection), ``text_features`` (``get_text_features``: the tanh pooler output, no projection), ``logits_per_image``
(from ``forward``), ``logit_scale``, ``text_ln_eps`` / ``vision_ln_eps`` (the epsilons actually in effect),
``text_ln_eps_built`` (what PaddleNLP had built), ``num_keys``. With a comma-separated ``--text-ln-eps`` (e.g.
``1e-5,none``) the loaded model is run once per value; each run's arrays are also written with a suffix ``_0``,
``_1``, ... (the unsuffixed ones are the first run). Missing or unexpected keys, or shape mismatches,
are an error (exit status 2) — except ``temperature`` when the config has no temperature: it is then set to 0 so the
logits are plain cosine.

``--backward``: one training step instead (first ``--text-ln-eps`` value): ``model.train()`` with every dropout at 0,
``model(input_ids, pixel_values, return_loss=True)`` (images and texts paired row by row), ``loss.backward()``. Writes
``loss``, ``pixel_grad`` [I,3,S,S] and ``grad/<parameter name>`` for every parameter (PaddleNLP layout and shapes,
Linear gradients [in, out]); a parameter without a gradient is an error.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys

import numpy as np


def _load_state(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    with open(path, "rb") as f:
        obj = pickle.load(f)
    if not isinstance(obj, dict):
        raise SystemExit(f"error: {path} does not hold a dict")
    out = {}
    for k, v in obj.items():
        if k.endswith("@@"):
            continue
        if isinstance(v, tuple) and len(v) == 2:  # (var_name, ndarray) variant
            v = v[1]
        out[k] = np.asarray(v)
    return out


def _build_config(cfg: dict):
    from paddlenlp.transformers import ErnieViLConfig

    t, v = cfg["text"], cfg["vision"]
    text_config = dict(
        vocab_size=t["vocab_size"],
        hidden_size=t["hidden_size"],
        num_hidden_layers=t["num_layers"],
        num_attention_heads=t["num_heads"],
        intermediate_size=t["intermediate_size"],
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=t["max_position_embeddings"],
        type_vocab_size=0,
        use_task_id=False,
        pad_token_id=t.get("pad_token_id", 0),
        layer_norm_eps=t.get("layer_norm_eps", 1e-5),
    )
    vision_config = dict(
        hidden_size=v["hidden_size"],
        intermediate_size=v["intermediate_size"],
        num_hidden_layers=v["num_layers"],
        num_attention_heads=v["num_heads"],
        num_channels=v.get("num_channels", 3),
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        hidden_act="quick_gelu",
        layer_norm_eps=v.get("layer_norm_eps", 1e-6),
        dropout=0.0,
        attention_dropout=0.0,
    )
    return ErnieViLConfig(text_config=text_config, vision_config=vision_config)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--text-ln-eps", default="1e-5",
                    help="epsilon for every text LayerNorm, or 'none' to keep PaddleNLP's own (1e-12); a "
                         "comma-separated list runs the model once per value (outputs suffixed _0, _1, ...)")
    ap.add_argument("--backward", action="store_true",
                    help="run one training step (return_loss=True, backward) and write the loss and gradients")
    args = ap.parse_args(argv)

    import paddle
    import paddle.nn as nn
    from paddlenlp.transformers import ErnieViLModel

    paddle.set_device("cpu")
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    has_temperature = bool(cfg.get("has_temperature", True))

    model = ErnieViLModel(_build_config(cfg))
    model.eval()

    text_norms = [l for l in model.text_model.sublayers() if isinstance(l, nn.LayerNorm)]
    vision_norms = [l for l in model.vision_model.sublayers() if isinstance(l, nn.LayerNorm)]
    n_text = 2 * cfg["text"]["num_layers"] + 1
    n_vision = 2 * cfg["vision"]["num_layers"] + 2
    if len(text_norms) != n_text or len(vision_norms) != n_vision:
        print(f"error: found {len(text_norms)} text / {len(vision_norms)} vision LayerNorms, "
              f"expected {n_text} / {n_vision}", file=sys.stderr)
        return 2
    for l in text_norms:
        l._built_epsilon = float(l._epsilon)
    built_text_eps = sorted({float(l._epsilon) for l in text_norms})
    eps_requests = [e.strip() for e in args.text_ln_eps.split(",") if e.strip()]
    if not eps_requests:
        print("error: --text-ln-eps is empty", file=sys.stderr)
        return 2

    # Strict load.
    state = _load_state(args.params)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    allowed_missing = set() if has_temperature else {"temperature"}
    missing = sorted(set(own) - set(state) - allowed_missing)
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {own[k]}"
                  for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != own[k]]
    if missing or unexpected or mismatched:
        print(f"error: missing {missing}; unexpected {unexpected}; mismatched {mismatched}", file=sys.stderr)
        return 2
    params = model.state_dict()
    for k, arr in state.items():
        params[k].set_value(np.ascontiguousarray(arr, dtype=np.float32))
    if not has_temperature:
        params["temperature"].set_value(np.zeros([1], dtype=np.float32))
    for k, arr in state.items():
        if not np.array_equal(params[k].numpy(), np.asarray(arr, dtype=np.float32)):
            print(f"error: value of {k} did not load", file=sys.stderr)
            return 2

    with np.load(args.inputs) as z:
        pixel_values = paddle.to_tensor(np.asarray(z["pixel_values"], dtype=np.float32))
        input_ids = paddle.to_tensor(np.asarray(z["input_ids"], dtype=np.int64))

    if args.backward:
        for l in text_norms:
            l._epsilon = float(eps_requests[0]) if eps_requests[0].lower() != "none" else l._built_epsilon
        return _backward(model, pixel_values, input_ids, args.out)

    arrays: dict[str, np.ndarray] = {"text_ln_eps_built": np.asarray(built_text_eps, dtype=np.float64),
                                     "num_keys": np.int64(len(own))}
    summary = {"num_keys": len(own), "text_ln_eps_built": built_text_eps, "runs": []}
    for j, request in enumerate(eps_requests):
        for l in text_norms:
            l._epsilon = float(request) if request.lower() != "none" else l._built_epsilon
        text_eps = sorted({float(l._epsilon) for l in text_norms})
        vision_eps = sorted({float(l._epsilon) for l in vision_norms})
        if len(text_eps) != 1 or len(vision_eps) != 1:
            print(f"error: mixed epsilons text {text_eps} vision {vision_eps}", file=sys.stderr)
            return 2
        if request.lower() != "none" and text_eps[0] != float(request):
            print(f"error: text eps override did not take effect: {text_eps}", file=sys.stderr)
            return 2
        with paddle.no_grad():
            image_features = model.get_image_features(pixel_values=pixel_values)
            text_features = model.get_text_features(input_ids=input_ids)
            out = model(input_ids=input_ids, pixel_values=pixel_values, return_dict=True)
            logit_scale = float(model.temperature.exp().numpy().reshape(-1)[0])
        run = dict(
            image_features=image_features.numpy().astype(np.float32),
            text_features=text_features.numpy().astype(np.float32),
            logits_per_image=out.logits_per_image.numpy().astype(np.float32),
            logit_scale=np.float32(logit_scale),
            text_ln_eps=np.float64(text_eps[0]),
            vision_ln_eps=np.float64(vision_eps[0]),
        )
        for k, v in run.items():
            arrays[f"{k}_{j}"] = v
            if j == 0:
                arrays[k] = v
        summary["runs"].append({"text_ln_eps": text_eps[0], "vision_ln_eps": vision_eps[0]})
    np.savez(args.out, **arrays)
    print(json.dumps(summary))
    return 0


def _backward(model, pixel_values, input_ids, out_path: str) -> int:
    """The ``--backward`` mode: loss and gradients of one dropout-free training step."""
    import paddle.nn as nn

    rates = sorted({float(l.p) for l in model.sublayers() if isinstance(l, nn.Dropout)})
    if rates != [0.0]:
        print(f"error: dropout rates {rates}, expected all 0", file=sys.stderr)
        return 2
    model.train()
    pixel_values.stop_gradient = False
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True, return_dict=True)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    if missing:
        print(f"error: no gradient for {missing[:5]}", file=sys.stderr)
        return 2
    arrays = {f"grad/{n}": p.grad.numpy().astype(np.float32) for n, p in model.named_parameters()}
    arrays["loss"] = np.float32(float(out.loss.numpy().reshape(-1)[0]))
    arrays["pixel_grad"] = pixel_values.grad.numpy().astype(np.float32)
    np.savez(out_path, **arrays)
    print(json.dumps({"loss": float(arrays["loss"]), "num_grads": len(arrays) - 2}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
