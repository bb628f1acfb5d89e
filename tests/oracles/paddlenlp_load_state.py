"""Oracle: does PaddleNLP 2.8.1's ``ErnieViLModel`` load a ``.pdparams`` the way a user would, strictly?

    python tests/oracles/paddlenlp_load_state.py --params model_state.pdparams --config config.json --out out.json

``paddle.load(params)``, then ``ErnieViLModel(config).set_state_dict(loaded)`` — which never raises (a missing key
keeps its random value, an unexpected or mis-shaped one is skipped with a warning), so its returned
``(missing_keys, unexpected_keys)`` are written out together with a value check of every parameter against the file.
``--config`` is this project's ``ErnieViL2Config.to_dict()`` JSON (the model is built from it, nothing downloaded).
Writes ``out.json``: ``missing``, ``unexpected``, ``num_file_keys``, ``num_model_keys``, ``unequal`` (keys whose
loaded value differs from the file).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paddlenlp_model import _build_config  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import paddle
    from paddlenlp.transformers import ErnieViLModel

    paddle.set_device("cpu")
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    loaded = paddle.load(args.params)
    model = ErnieViLModel(_build_config(cfg))
    missing, unexpected = model.set_state_dict(loaded)
    params = model.state_dict()
    unequal = sorted(k for k in loaded if k in params
                     and not np.array_equal(params[k].numpy(), np.asarray(loaded[k].numpy())))
    result = {"missing": list(missing), "unexpected": list(unexpected), "num_file_keys": len(loaded),
              "num_model_keys": len(params), "unequal": unequal}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    print(json.dumps({k: (v if not isinstance(v, list) else len(v)) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
