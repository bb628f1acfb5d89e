"""The official-layout Paddle reference (``ernievil2torch.verify.paddle_reference``) against PaddleNLP 2.8.1's ErnieViLModel.

Two independent Paddle implementations of ERNIE-ViL 2.0 — ours in the official key layout, PaddleNLP's port in its
own layout — are run on the same random weights (every parameter randomised, LayerNorm scales and biases included)
and the same inputs (texts of different lengths padded with id 0). The oracle runs in the PaddleNLP interpreter as a
subprocess (``tests/oracles/paddlenlp_model.py``).

* With the text LayerNorm epsilon set to the official 1e-5, both towers agree to float32 round-off.
* With PaddleNLP's own text epsilon (1e-12, a PaddleNLP >= 2.6 bug), the image features still agree but the text
  features differ measurably.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Paddle sets OMP_NUM_THREADS=1 at import when it is unset: remember the user's value for the oracle subprocess.
_USER_OMP_THREADS = os.environ.get("OMP_NUM_THREADS")

import helpers  # noqa: E402

paddle = helpers.require_module("paddle")

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config  # noqa: E402
from ernievil2torch.verify.parity import FEATURE_ATOL, LOGIT_ATOL, MIN_COSINE  # noqa: E402
from ernievil2torch.verify.paddle_reference import (  # noqa: E402
    PaddleErnieViL2,
    ReferenceSizes,
    load_official_state,
    run_reference,
)

REPO = Path(__file__).resolve().parents[2]
ORACLE_SCRIPT = REPO / "tests" / "oracles" / "paddlenlp_model.py"


@pytest.fixture(scope="module")
def oracle_python() -> str:
    return str(helpers.oracle_python())


def reference_sizes(config: ErnieViL2Config) -> ReferenceSizes:
    """The reference's sizes for one of the project's test configs (only to draw a random state of that size: the
    reference itself reads its sizes back from the state's shapes)."""
    t, v = config.text, config.vision
    return ReferenceSizes(vocab_size=t.vocab_size, text_hidden=t.hidden_size, text_layers=t.num_layers,
                          text_intermediate=t.intermediate_size, max_positions=t.max_position_embeddings,
                          image_size=v.image_size, patch_size=v.patch_size, vision_hidden=v.hidden_size,
                          vision_layers=v.num_layers, vision_intermediate=v.intermediate_size,
                          has_temperature=config.has_temperature)


# ----------------------------------------------------------------------------------------------------------------
# Random weights and inputs
# ----------------------------------------------------------------------------------------------------------------
def random_official_state(config: ErnieViL2Config, seed: int) -> dict[str, np.ndarray]:
    """Every parameter of the official layout, randomised (norm scales/biases, embeddings, temperature included)."""
    paddle.seed(seed)
    shapes = {k: tuple(v.shape) for k, v in PaddleErnieViL2(reference_sizes(config)).state_dict().items()}
    rng = np.random.default_rng(seed)

    def randn(shape, std, mean=0.0):
        return (mean + std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    state = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        is_norm = any(f".{n}." in key for n in ("norm_pre", "norm_post", "norm1", "norm2", "ln1", "ln2")) \
            or key.startswith("text_model.ln.")
        if key == "contrastive_loss_mm.temperature_b":
            state[key] = np.array([2.0 + rng.random()], dtype=np.float32)
        elif is_norm:
            state[key] = randn(shape, 0.1, 1.0) if leaf == "weight" else randn(shape, 0.1)
        elif key in ("text_model.word_emb.weight", "text_model.pos_emb.weight"):
            # ERNIE-like small embeddings: the text LayerNorm epsilon then matters, as in the real model.
            state[key] = randn(shape, 0.02)
        elif key in ("visual.class_embedding", "visual.positional_embedding"):
            state[key] = randn(shape, 0.2)
        elif key == "visual.patch_embed.proj.weight":
            fan_in = int(np.prod(shape[1:]))
            state[key] = randn(shape, 1.0 / math.sqrt(fan_in))
        elif leaf == "weight":  # Paddle Linear: [in, out]
            state[key] = randn(shape, 0.5 / math.sqrt(shape[0]))
        elif leaf == "bias":
            state[key] = randn(shape, 0.05)
        else:  # pragma: no cover - a key this test does not know
            raise AssertionError(f"unhandled parameter {key}")
    return state


def random_inputs(config: ErnieViL2Config, seed: int, n_images: int, lengths: list[int], seq_len: int):
    rng = np.random.default_rng(seed + 1)
    v = config.vision
    pixel_values = rng.standard_normal((n_images, v.num_channels, v.image_size, v.image_size), dtype=np.float32)
    ids = np.zeros((len(lengths), seq_len), dtype=np.int64)
    for row, n in enumerate(lengths):
        assert 2 <= n <= seq_len
        ids[row, 0] = 1                      # [CLS]
        ids[row, 1:n - 1] = rng.integers(4, config.text.vocab_size, size=n - 2)
        ids[row, n - 1] = 2                  # [SEP]
    assert (ids == 0).any() and (ids != 0).all(axis=1).any(), "want padded rows and one full row"
    return pixel_values, ids


# ----------------------------------------------------------------------------------------------------------------
# Official layout -> PaddleNLP layout
# ----------------------------------------------------------------------------------------------------------------
def official_to_paddlenlp(state: dict[str, np.ndarray], config: ErnieViL2Config) -> dict[str, np.ndarray]:
    d = config.vision.hidden_size
    out: dict[str, np.ndarray] = {}
    for key, arr in state.items():
        if key.startswith("visual.classfy."):
            continue
        if key == "contrastive_loss_mm.temperature_b":
            out["temperature"] = arr
        elif key == "visual.class_embedding":
            out["vision_model.class_embedding"] = arr.reshape(d)
        elif key == "visual.positional_embedding":
            out["vision_model.positional_embedding.weight"] = arr.reshape(arr.shape[-2], d)
        elif key == "visual.patch_embed.proj.weight":
            out["vision_model.conv1.weight"] = arr
        elif key.startswith("visual.norm_pre."):
            out["vision_model.ln_pre." + key.rsplit(".", 1)[1]] = arr
        elif key.startswith("visual.norm_post."):
            out["vision_model.ln_post." + key.rsplit(".", 1)[1]] = arr
        elif key.startswith("visual.blocks."):
            _, _, i, *rest = key.split(".")
            sub, leaf = ".".join(rest[:-1]), rest[-1]
            pre = f"vision_model.transformer.layers.{i}."
            if sub == "attn.qkv":
                cols = arr[..., 0:d], arr[..., d:2 * d], arr[..., 2 * d:3 * d]   # column thirds: q | k | v
                for name, part in zip(("q_proj", "k_proj", "v_proj"), cols):
                    out[f"{pre}self_attn.{name}.{leaf}"] = np.ascontiguousarray(part)
            else:
                new = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "self_attn.out_proj",
                       "mlp.fc1": "linear1", "mlp.fc2": "linear2"}[sub]
                out[f"{pre}{new}.{leaf}"] = arr
        elif key == "text_model.word_emb.weight":
            out["text_model.embeddings.word_embeddings.weight"] = arr
        elif key == "text_model.pos_emb.weight":
            out["text_model.embeddings.position_embeddings.weight"] = arr
        elif key.startswith("text_model.ln."):
            out["text_model.embeddings.layer_norm." + key.rsplit(".", 1)[1]] = arr
        elif key.startswith("text_model.pooler."):
            out["text_model.pooler.dense." + key.rsplit(".", 1)[1]] = arr
        elif key.startswith("text_model.encoder_stack.block."):
            parts = key.split(".")
            i, sub, leaf = parts[3], ".".join(parts[4:-1]), parts[-1]
            new = {"attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj",
                   "attn.o": "self_attn.out_proj", "ln1": "norm1", "ln2": "norm2",
                   "ffn.i": "linear1", "ffn.o": "linear2"}[sub]
            out[f"text_model.encoder.layers.{i}.{new}.{leaf}"] = arr
        else:  # pragma: no cover
            raise AssertionError(f"unmapped official key {key}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Running both sides
# ----------------------------------------------------------------------------------------------------------------
def run_paddlenlp_oracle(py: str, workdir: Path, config: ErnieViL2Config, state: dict[str, np.ndarray],
                         pixel_values: np.ndarray, input_ids: np.ndarray, text_ln_eps: str = "1e-5",
                         timeout: float = 600) -> dict[str, np.ndarray]:
    workdir.mkdir(parents=True, exist_ok=True)
    params = workdir / "model_state.pdparams"
    if not params.exists():
        with open(params, "wb") as f:
            pickle.dump(state, f, protocol=4)
    (workdir / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    np.savez(workdir / "inputs.npz", pixel_values=pixel_values, input_ids=input_ids)
    out = workdir / f"out_{text_ln_eps}.npz"
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = _USER_OMP_THREADS or str(os.cpu_count() or 1)
    proc = subprocess.run(
        [py, str(ORACLE_SCRIPT), "--inputs", str(workdir / "inputs.npz"), "--params", str(params),
         "--config", str(workdir / "config.json"), "--out", str(out), "--text-ln-eps", text_ln_eps],
        capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"oracle failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def run_torch_port(workdir: Path, paddlenlp_state: dict[str, np.ndarray], pixel_values: np.ndarray,
                   input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Convert a PaddleNLP-layout state with the project's converter and run the PyTorch model on it."""
    from ernievil2torch.conversion import convert_state
    from ernievil2torch.modeling import ErnieViL2
    from ernievil2torch.verify.parity import ParityInputs, run_torch

    out_dir = workdir / "torch_port"
    convert_state(dict(paddlenlp_state), out_dir, overwrite=True)
    return run_torch(ErnieViL2.from_pretrained(out_dir), ParityInputs(pixel_values, input_ids))


def _assert_torch_matches_oracle(label: str, torch_out: dict, theirs: dict) -> None:
    img_diff, img_cos = _compare(torch_out["image_features"], theirs["image_features"])
    txt_diff, txt_cos = _compare(torch_out["text_features"], theirs["text_features"])
    logit_diff = float(np.abs(torch_out["logits_per_image"] - theirs["logits_per_image"]).max())
    print(f"[torch port vs PaddleNLP] {label}: image max abs {img_diff:.3g} cos {img_cos:.9f}, "
          f"text max abs {txt_diff:.3g} cos {txt_cos:.9f}, logits max abs {logit_diff:.3g}", file=sys.stderr)
    assert img_diff <= FEATURE_ATOL and img_cos >= MIN_COSINE
    assert txt_diff <= FEATURE_ATOL and txt_cos >= MIN_COSINE
    assert logit_diff <= LOGIT_ATOL


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max abs diff, min row cosine)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(np.abs(a - b).max()), float(cos.min())


def _report(label: str, **figures) -> None:
    shown = []
    for k, v in figures.items():
        if k.endswith("_cos"):
            shown.append(f"{k}={v:.9f} (1-cos={1.0 - v:.2e})")
        else:
            shown.append(f"{k}={v:.3g}")
    line = f"[paddle-reference vs PaddleNLP] {label}: " + ", ".join(shown)
    print(line, file=sys.stderr)


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    config = tiny_config()
    state = random_official_state(config, seed=1234)
    pixel_values, input_ids = random_inputs(config, seed=1234, n_images=3, lengths=[16, 5, 9, 2], seq_len=16)
    ours = run_reference(state, pixel_values, input_ids)
    return dict(config=config, state=state, pixel_values=pixel_values, input_ids=input_ids, ours=ours,
                workdir=tmp_path_factory.mktemp("tiny_oracle"))


# ----------------------------------------------------------------------------------------------------------------
# Tests that need only Paddle
# ----------------------------------------------------------------------------------------------------------------
def test_state_dict_layout_full_size():
    """The reference's default sizes build exactly the released file's 350 tensors (SPEC.md), and its sizes read
    back from those shapes are the defaults again."""
    paddle.seed(0)
    shapes = {k: tuple(v.shape) for k, v in PaddleErnieViL2(ReferenceSizes()).state_dict().items()}
    assert len(shapes) == 350
    assert sum(int(np.prod(s)) for s in shapes.values()) == 203_738_881
    assert shapes["visual.class_embedding"] == (1, 1, 768)
    assert shapes["visual.positional_embedding"] == (1, 197, 768)
    assert shapes["visual.patch_embed.proj.weight"] == (768, 3, 16, 16)
    assert "visual.patch_embed.proj.bias" not in shapes
    assert shapes["visual.blocks.11.attn.qkv.weight"] == (768, 2304)
    assert shapes["visual.blocks.11.attn.qkv.bias"] == (2304,)
    assert shapes["visual.blocks.0.mlp.fc1.weight"] == (768, 3072)
    assert shapes["text_model.word_emb.weight"] == (40000, 768)
    assert shapes["text_model.pos_emb.weight"] == (2048, 768)
    assert shapes["text_model.encoder_stack.block.11.ffn.o.weight"] == (3072, 768)
    assert shapes["text_model.pooler.weight"] == (768, 768)
    assert shapes["contrastive_loss_mm.temperature_b"] == (1,)
    assert ReferenceSizes.from_state({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}) \
        == ReferenceSizes()
    no_temp = ReferenceSizes(has_temperature=False)
    assert "contrastive_loss_mm.temperature_b" not in PaddleErnieViL2(no_temp).state_dict()


def test_sizes_come_from_the_state_and_constants_from_the_official_code():
    """Nothing of the reference is read from the package it checks: sizes from the state's shapes, fixed values
    from the module's own constants (never ``ernievil2torch.config`` / ``constants``)."""
    import ast

    from ernievil2torch.verify import paddle_reference

    tree = ast.parse(Path(paddle_reference.__file__).read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if "config" in m or "constants" in m}, imported
    for config in (tiny_config(), dataclasses.replace(tiny_config(), has_temperature=False)):
        state = random_official_state(config, seed=0)
        assert ReferenceSizes.from_state(state) == reference_sizes(config)
    with pytest.raises(ValueError, match="visual.patch_embed.proj.weight"):
        ReferenceSizes.from_state({k: v for k, v in random_official_state(tiny_config(), 0).items()
                                   if not k.startswith("visual.patch")})


def test_layer_norm_epsilons():
    model = PaddleErnieViL2(reference_sizes(tiny_config()))
    text = [l._epsilon for l in model.text_model.sublayers() if isinstance(l, paddle.nn.LayerNorm)]
    vision = [l._epsilon for l in model.visual.sublayers() if isinstance(l, paddle.nn.LayerNorm)]
    assert len(text) == 2 * 2 + 1 and set(text) == {1e-5}
    assert len(vision) == 2 * 2 + 2 and set(vision) == {1e-6}


def test_load_official_state_is_strict():
    config = tiny_config()
    state = random_official_state(config, seed=7)
    model = PaddleErnieViL2(reference_sizes(config))
    # The leftover classification head is dropped silently.
    extra = dict(state)
    extra["visual.classfy.weight"] = np.zeros((config.vision.hidden_size, 10), np.float32)
    extra["visual.classfy.bias"] = np.zeros((10,), np.float32)
    load_official_state(model, extra)
    np.testing.assert_array_equal(model.state_dict()["text_model.pooler.weight"].numpy(),
                                  state["text_model.pooler.weight"])

    missing = {k: v for k, v in state.items() if k != "visual.norm_post.bias"}
    with pytest.raises(ValueError, match="visual.norm_post.bias"):
        load_official_state(model, missing)
    unexpected = dict(state, **{"visual.head.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="visual.head.weight"):
        load_official_state(model, unexpected)
    wrong = dict(state)
    wrong["visual.class_embedding"] = state["visual.class_embedding"].reshape(-1)
    with pytest.raises(ValueError, match="visual.class_embedding"):
        load_official_state(model, wrong)
    no_temp = {k: v for k, v in state.items() if k != "contrastive_loss_mm.temperature_b"}
    with pytest.raises(ValueError, match="temperature_b"):
        load_official_state(model, no_temp)


def test_reference_outputs_are_consistent(tiny_case):
    ours = tiny_case["ours"]
    n_img, n_txt = tiny_case["pixel_values"].shape[0], tiny_case["input_ids"].shape[0]
    d = tiny_case["config"].text.hidden_size
    assert ours["image_features"].shape == (n_img, d) and ours["image_features"].dtype == np.float32
    assert ours["text_features"].shape == (n_txt, d) and ours["text_features"].dtype == np.float32
    assert np.abs(ours["text_features"]).max() < 1.0          # tanh pooler
    img = ours["image_features"] / np.linalg.norm(ours["image_features"], axis=-1, keepdims=True)
    txt = ours["text_features"] / np.linalg.norm(ours["text_features"], axis=-1, keepdims=True)
    expected = ours["logit_scale"] * img @ txt.T
    np.testing.assert_allclose(ours["logits_per_image"], expected, rtol=1e-5, atol=1e-5)
    assert ours["logit_scale"] == pytest.approx(math.exp(float(tiny_case["state"]["contrastive_loss_mm.temperature_b"][0])),
                                                rel=1e-6)
    # Padding is ignored: a padded row equals the same text run alone without padding.
    ids = tiny_case["input_ids"]
    row = 1
    n = int((ids[row] != 0).sum())
    alone = run_reference(tiny_case["state"], tiny_case["pixel_values"][:1], ids[row:row + 1, :n])
    np.testing.assert_allclose(alone["text_features"][0], ours["text_features"][row], atol=2e-6)


def test_no_temperature_gives_plain_cosine():
    config = dataclasses.replace(tiny_config(), has_temperature=False)
    state = random_official_state(config, seed=3)
    pixel_values, input_ids = random_inputs(config, seed=3, n_images=2, lengths=[6, 3], seq_len=6)
    ours = run_reference(state, pixel_values, input_ids)
    assert ours["logit_scale"] is None
    img = ours["image_features"] / np.linalg.norm(ours["image_features"], axis=-1, keepdims=True)
    txt = ours["text_features"] / np.linalg.norm(ours["text_features"], axis=-1, keepdims=True)
    np.testing.assert_allclose(ours["logits_per_image"], img @ txt.T, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Against the PaddleNLP oracle
# ----------------------------------------------------------------------------------------------------------------
def test_conversion_covers_paddlenlp_layout_full_size():
    """At full size the converted official state has exactly PaddleNLP's 398 keys."""
    config = base_config()
    shapes = {k: tuple(v.shape) for k, v in PaddleErnieViL2(ReferenceSizes()).state_dict().items()}
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}   # no memory behind them
    converted = official_to_paddlenlp(fake, config)
    assert len(converted) == 398
    assert converted["vision_model.class_embedding"].shape == (768,)
    assert converted["vision_model.positional_embedding.weight"].shape == (197, 768)
    assert converted["vision_model.transformer.layers.0.self_attn.k_proj.weight"].shape == (768, 768)
    assert converted["vision_model.transformer.layers.0.self_attn.k_proj.bias"].shape == (768,)


def test_matches_paddlenlp_with_official_text_eps(oracle_python, tiny_case):
    config = tiny_case["config"]
    theirs = run_paddlenlp_oracle(oracle_python, tiny_case["workdir"], config,
                                  official_to_paddlenlp(tiny_case["state"], config),
                                  tiny_case["pixel_values"], tiny_case["input_ids"], text_ln_eps="1e-5")
    assert float(theirs["text_ln_eps"]) == 1e-5
    assert float(theirs["vision_ln_eps"]) == 1e-6
    assert list(theirs["text_ln_eps_built"]) == [1e-12]       # what PaddleNLP 2.8.1 builds on its own
    ours = tiny_case["ours"]
    img_diff, img_cos = _compare(ours["image_features"], theirs["image_features"])
    txt_diff, txt_cos = _compare(ours["text_features"], theirs["text_features"])
    logit_diff = float(np.abs(ours["logits_per_image"] - theirs["logits_per_image"]).max())
    _report("tiny, text eps 1e-5", image_max_abs=img_diff, image_cos=img_cos, text_max_abs=txt_diff,
            text_cos=txt_cos, logits_max_abs=logit_diff)
    assert img_diff <= FEATURE_ATOL and img_cos >= MIN_COSINE
    assert txt_diff <= FEATURE_ATOL and txt_cos >= MIN_COSINE
    assert logit_diff <= LOGIT_ATOL
    assert float(theirs["logit_scale"]) == pytest.approx(ours["logit_scale"], rel=1e-6)
    # The PyTorch port, converted from the PaddleNLP layout by our converter, against the same oracle output.
    torch_out = run_torch_port(tiny_case["workdir"], official_to_paddlenlp(tiny_case["state"], config),
                               tiny_case["pixel_values"], tiny_case["input_ids"])
    _assert_torch_matches_oracle("tiny, text eps 1e-5", torch_out, theirs)


def test_paddlenlp_default_text_eps_differs(oracle_python, tiny_case):
    """PaddleNLP's own 1e-12 text epsilon changes the text features measurably; images are untouched."""
    config = tiny_case["config"]
    theirs = run_paddlenlp_oracle(oracle_python, tiny_case["workdir"], config,
                                  official_to_paddlenlp(tiny_case["state"], config),
                                  tiny_case["pixel_values"], tiny_case["input_ids"], text_ln_eps="none")
    assert float(theirs["text_ln_eps"]) == 1e-12
    ours = tiny_case["ours"]
    img_diff, img_cos = _compare(ours["image_features"], theirs["image_features"])
    txt_diff, txt_cos = _compare(ours["text_features"], theirs["text_features"])
    _report("tiny, PaddleNLP text eps 1e-12", image_max_abs=img_diff, image_cos=img_cos, text_max_abs=txt_diff,
            text_cos=txt_cos)
    assert img_diff <= FEATURE_ATOL and img_cos >= MIN_COSINE
    assert txt_diff >= 1e-4, "expected the 1e-12 text epsilon to change the text features measurably"


def test_matches_paddlenlp_full_size(oracle_python, tmp_path):
    config = base_config()
    state = random_official_state(config, seed=99)
    pixel_values, input_ids = random_inputs(config, seed=99, n_images=2, lengths=[48, 9, 20], seq_len=48)
    ours = run_reference(state, pixel_values, input_ids)
    converted = official_to_paddlenlp(state, config)
    assert len(converted) == 398
    del state
    figures = {}
    # One oracle run (one 800 MB load) evaluates both epsilons.
    both = run_paddlenlp_oracle(oracle_python, tmp_path, config, converted, pixel_values, input_ids,
                                text_ln_eps="1e-5,none")
    assert int(both["num_keys"]) == 398
    for j, eps in enumerate(("1e-5", "none")):
        theirs = {k: both[f"{k}_{j}"] for k in ("image_features", "text_features", "logits_per_image",
                                                 "text_ln_eps", "vision_ln_eps")}
        assert float(theirs["text_ln_eps"]) == (1e-5 if eps == "1e-5" else 1e-12)
        assert float(theirs["vision_ln_eps"]) == 1e-6
        figures[eps] = (_compare(ours["image_features"], theirs["image_features"]),
                        _compare(ours["text_features"], theirs["text_features"]),
                        float(np.abs(ours["logits_per_image"] - theirs["logits_per_image"]).max()))
        (img_diff, img_cos), (txt_diff, txt_cos), logit_diff = figures[eps]
        _report(f"full size, text eps {eps if eps != 'none' else '1e-12 (PaddleNLP)'}", image_max_abs=img_diff,
                image_cos=img_cos, text_max_abs=txt_diff, text_cos=txt_cos, logits_max_abs=logit_diff)
        assert img_diff <= FEATURE_ATOL and img_cos >= MIN_COSINE
    (_, _), (txt_diff, txt_cos), logit_diff = figures["1e-5"]
    assert txt_diff <= FEATURE_ATOL and txt_cos >= MIN_COSINE
    assert logit_diff <= LOGIT_ATOL
    assert figures["none"][1][0] >= 1e-4
    # The PyTorch port, converted from the PaddleNLP layout by our converter, against the oracle (eps 1e-5).
    torch_out = run_torch_port(tmp_path, converted, pixel_values, input_ids)
    _assert_torch_matches_oracle("full size, text eps 1e-5", torch_out,
                                 {k: both[f"{k}_0"] for k in ("image_features", "text_features", "logits_per_image")})


def test_matches_paddlenlp_without_temperature(oracle_python, tmp_path):
    """A checkpoint without a temperature: plain cosine on both sides (the oracle pins PaddleNLP's to 0)."""
    config = dataclasses.replace(tiny_config(), has_temperature=False)
    state = random_official_state(config, seed=5)
    assert "contrastive_loss_mm.temperature_b" not in state
    pixel_values, input_ids = random_inputs(config, seed=5, n_images=2, lengths=[7, 3, 12], seq_len=12)
    ours = run_reference(state, pixel_values, input_ids)
    converted = official_to_paddlenlp(state, config)
    assert "temperature" not in converted
    theirs = run_paddlenlp_oracle(oracle_python, tmp_path, config, converted, pixel_values, input_ids)
    assert float(theirs["logit_scale"]) == 1.0 and ours["logit_scale"] is None
    for name in ("image_features", "text_features"):
        diff, cos = _compare(ours[name], theirs[name])
        assert diff <= FEATURE_ATOL and cos >= MIN_COSINE, (name, diff, cos)
    assert float(np.abs(ours["logits_per_image"] - theirs["logits_per_image"]).max()) <= 1e-5
