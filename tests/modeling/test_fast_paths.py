"""Fast inference paths: padding invariance, [CLS]-only last block, half precision, torch.compile.

All on the tiny config with random weights (``synthetic.random_state``); fp32 fast paths must match the plain
computation within 1e-5, half precision must keep cosine >= 0.999 to fp32 features.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ernievil2torch.config import tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.modeling.layers import attention_bias
from ernievil2torch.verify.synthetic import random_state

from helpers import unavailable

ATOL = 1e-5
MIN_HALF_COSINE = 0.999


def _model(dtype: torch.dtype = torch.float32) -> ErnieViL2:
    config = tiny_config()
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, seed=3).items()})
    return model.eval().to(dtype)


def _inputs(batch: int = 4, seed: int = 0):
    config = tiny_config()
    g = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    pixels = torch.rand(batch, 3, size, size, generator=g) * 4.7 - 2.1
    lengths = [5, 12, 3, 9][:batch]
    ids = torch.zeros(batch, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(4, config.text.vocab_size, (length,), generator=g)
        ids[row, 0], ids[row, length - 1] = 1, 2
    return pixels, ids


def _plain_text(model: ErnieViL2, ids: torch.Tensor) -> torch.Tensor:
    """The unoptimised definition: every token through every block, pooled [CLS], no trimming."""
    text = model.text
    hidden = text.forward_tokens(ids, attention_bias(ids != 0, torch.float32), first_token_only=False)
    return torch.tanh(text.pooler(hidden[:, 0]))


def _plain_image(model: ErnieViL2, pixels: torch.Tensor) -> torch.Tensor:
    vision = model.vision
    return vision.norm_post(vision.forward_tokens(pixels, first_token_only=False)[:, 0])


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=-1).min())


@torch.inference_mode()
def test_padding_invariance_same_text_any_padding():
    model = _model()
    _, ids = _inputs()
    reference = model.encode_text(ids)
    for extra in (1, 7, 40):
        padded = torch.cat([ids, torch.zeros(ids.shape[0], extra, dtype=ids.dtype)], dim=1)
        torch.testing.assert_close(model.encode_text(padded), reference, atol=ATOL, rtol=0)
        mask = (padded != 0).long()
        torch.testing.assert_close(model.encode_text(padded, mask), reference, atol=ATOL, rtol=0)
    # Each text alone (no padding at all) equals its row in the padded batch.
    for row in range(ids.shape[0]):
        alone = ids[row:row + 1, : int((ids[row] != 0).sum())]
        torch.testing.assert_close(model.encode_text(alone)[0], reference[row], atol=ATOL, rtol=0)


@torch.inference_mode()
def test_padding_invariance_without_trimming():
    """The masked (untrimmed) computation itself gives the same features: -10000 keys weigh exactly 0."""
    model = _model()
    _, ids = _inputs()
    padded = torch.cat([ids, torch.zeros(ids.shape[0], 20, dtype=ids.dtype)], dim=1)
    torch.testing.assert_close(_plain_text(model, padded), _plain_text(model, ids), atol=ATOL, rtol=0)


@torch.inference_mode()
def test_fast_paths_equal_plain_paths_fp32():
    model = _model()
    pixels, ids = _inputs()
    torch.testing.assert_close(model.encode_image(pixels), _plain_image(model, pixels), atol=ATOL, rtol=0)
    torch.testing.assert_close(model.encode_text(ids), _plain_text(model, ids), atol=ATOL, rtol=0)
    full = torch.randint(4, tiny_config().text.vocab_size, (3, 10))  # nothing padded: no bias at all
    torch.testing.assert_close(model.encode_text(full), _plain_text(model, full), atol=ATOL, rtol=0)


def test_fast_paths_keep_autograd():
    """The encode paths are not forced into inference mode: gradients still flow when asked for."""
    model = _model()
    pixels, ids = _inputs()
    (model.encode_image(pixels).sum() + model.encode_text(ids).sum()).backward()
    assert model.vision.layers[-1].attn.qkv.weight.grad is not None
    assert model.text.layers[-1].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.inference_mode()
def test_half_precision_cosine(dtype):
    """Both half types run on CPU with the pinned torch; an error here is a failure, never a skip."""
    reference, half = _model(), _model(dtype)
    pixels, ids = _inputs()
    image = half.encode_image(pixels)
    text = half.encode_text(ids)
    assert image.dtype == dtype and text.dtype == dtype
    assert _min_cosine(image, reference.encode_image(pixels)) >= MIN_HALF_COSINE
    assert _min_cosine(text, reference.encode_text(ids)) >= MIN_HALF_COSINE


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_quick_gelu_mlp_is_the_plain_mlp(dtype, monkeypatch):
    """The half-precision QuickGELU MLP (scalings folded into the GEMMs) computes the plain MLP's function in
    inference, and is not taken where autograd is on or in fp32."""
    from ernievil2torch.modeling.layers import MLP, quick_gelu

    torch.manual_seed(0)
    mlp = MLP(128, 256, quick_gelu).eval()
    x = torch.randn(3, 17, 128)
    with torch.no_grad():
        exact = mlp.double()(x.double())
        half = mlp.to(dtype)
        fast, plain = half(x.to(dtype)).double(), half.fc2(quick_gelu(half.fc1(x.to(dtype)))).double()
    scale = float(exact.abs().max())
    assert float((fast - exact).abs().max()) <= 2 * float((plain - exact).abs().max()) + 1e-3 * scale
    monkeypatch.setattr(MLP, "_half_quick_gelu", lambda self, x: pytest.fail("fast path taken"))
    half(x.to(dtype).requires_grad_())  # autograd on: the plain path
    with torch.no_grad():
        mlp.float()(x)  # fp32: the plain path


@torch.inference_mode()
def test_from_pretrained_half_dtype(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    loaded = ErnieViL2.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    pixels, ids = _inputs()
    assert _min_cosine(loaded.encode_image(pixels), model.encode_image(pixels)) >= MIN_HALF_COSINE
    assert _min_cosine(loaded.encode_text(ids), model.encode_text(ids)) >= MIN_HALF_COSINE


def _inductor_unusable() -> str:
    if shutil.which("gcc") is None and shutil.which("g++") is None and shutil.which("clang") is None:
        return "torch.compile's inductor backend needs a C/C++ compiler on CPU and none is installed"
    try:
        compiled = torch.compile(lambda t: t * 2 + 1)
        compiled(torch.ones(3))
    except Exception as exc:  # noqa: BLE001 - any failure means the backend cannot be used here
        return f"torch.compile (inductor) is unusable here: {type(exc).__name__}: {exc}"[:300]
    return ""


def test_compile_path_matches_eager():
    reason = _inductor_unusable()
    if reason:
        unavailable(reason)
    eager, compiled = _model(), _model()
    assert compiled.compile() is compiled
    pixels, ids = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(compiled.encode_image(pixels), eager.encode_image(pixels), atol=ATOL, rtol=0)
        torch.testing.assert_close(compiled.encode_text(ids), eager.encode_text(ids), atol=ATOL, rtol=0)


def test_gpu_path_code_runs_without_cuda():
    """The accelerator branches (no host sync for the mask) are exercised on CPU via a meta-free check."""
    model = _model()
    _, ids = _inputs()
    bias = model.text.padding_bias(ids, None, torch.float32)
    assert bias is not None and bias.shape == (ids.shape[0], 1, 1, ids.shape[1])
    assert model.text.padding_bias(torch.ones(2, 4, dtype=torch.long), None, torch.float32) is None
    if not torch.cuda.is_available():
        assert np.isfinite(model.encode_text(ids).detach().numpy()).all()
