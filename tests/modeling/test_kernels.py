"""The per-machine kernel choice: each kernel forced, agreement with eager fp32, training paths untouched, no stale
reordered weight, and the measured / cached / overridden choice.

Tiny config with random weights; oneDNN is part of every x86 torch wheel, so its kernel runs here (a build without
it fails ``test_onednn_is_usable``: a forced choice must never silently fall back)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ernievil2torch.config import tiny_config
from ernievil2torch.constants import KERNELS_ENV
from ernievil2torch.errors import InputError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.modeling import kernel_choice, kernels
from ernievil2torch.modeling.kernel_choice import (cache_path, kernel_record, machine_key, measure_kernels,
                                                   parse_kernels, resolve_kernels)
from ernievil2torch.modeling.kernels import REFERENCE, KernelChoice
from ernievil2torch.modeling.layers import attention_bias
from ernievil2torch.verify.synthetic import random_state

ATOL = 1e-5
ONEDNN = KernelChoice(float32="onednn")
HALF_FP32 = KernelChoice(bfloat16="fp32", float16="fp32")


def _model(seed: int = 3) -> ErnieViL2:
    config = tiny_config()
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, seed=seed).items()})
    return model.eval()


def _inputs():
    config = tiny_config()
    g = torch.Generator().manual_seed(0)
    size = config.vision.image_size
    pixels = torch.rand(3, 3, size, size, generator=g) * 4.7 - 2.1
    ids = torch.randint(4, config.text.vocab_size, (3, 9), generator=g)
    ids[0, 5:] = 0  # one padded row: the masked attention path
    return pixels, ids


def _features(model: ErnieViL2, choice: KernelChoice, pixels, ids):
    model.use_kernels(choice)
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(ids)


def _plain(model: ErnieViL2, pixels, ids):
    """The unoptimised eager fp32 definition (every token through every block, module calls only)."""
    with torch.no_grad():
        image = model.vision.norm_post(model.vision.forward_tokens(pixels)[:, 0])
        text = torch.tanh(model.text.pooler(model.text.forward_tokens(ids, attention_bias(ids != 0, torch.float32))[:, 0]))
    return image, text


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts calls of the oneDNN kernel."""
    calls = []
    original = kernels._onednn

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "_onednn", counting)
    return calls


def test_onednn_is_usable():
    assert kernels.onednn_usable()


def test_forced_kernels_agree_with_each_other_and_eager_fp32(onednn_calls):
    choice, calls = ONEDNN, onednn_calls
    model = _model()
    pixels, ids = _inputs()
    image_ref, text_ref = _features(model, REFERENCE, pixels, ids)
    assert not calls
    image_fast, text_fast = _features(model, choice, pixels, ids)
    assert len(calls) > 0
    image_plain, text_plain = _plain(model, pixels, ids)
    for got, want in [(image_fast, image_ref), (text_fast, text_ref), (image_fast, image_plain),
                      (text_fast, text_plain), (image_ref, image_plain), (text_ref, text_plain)]:
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_quick_gelu_mlp_folds_its_slope_into_the_reordered_weights(monkeypatch):
    """Under the oneDNN kernel each ViT MLP runs ``silu(s h) / s`` with ``s`` in the weights (fc1 and fc2 each once
    per block); the reference never does, and the features agree within 1e-5."""
    from ernievil2torch.modeling import layers

    calls = []
    original = layers.scaled_silu_linear
    monkeypatch.setattr(layers, "scaled_silu_linear", lambda *a, **k: calls.append(a[-2:]) or original(*a, **k))
    model = _model()
    pixels, ids = _inputs()
    want = _features(model, REFERENCE, pixels, ids)[0]
    assert not calls
    got = _features(model, ONEDNN, pixels, ids)[0]
    blocks = len(model.vision.layers)
    assert len(calls) == 2 * blocks
    assert calls[:2] == [(layers.QUICK_GELU_SLOPE, layers.QUICK_GELU_SLOPE), (1.0 / layers.QUICK_GELU_SLOPE, 1.0)]
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    fc1 = model.vision.layers[0].mlp.fc1
    (scale, *_), = fc1.__dict__[kernels._PACKED_ATTR]  # the scaled copy only
    assert scale == layers.QUICK_GELU_SLOPE


def test_onednn_applies_activations_in_place_not_as_post_ops(monkeypatch):
    """The oneDNN kernel asks oneDNN for the plain GEMM only (its GELU and SiLU post-ops measured a third slower than
    the GEMM followed by one in-place pass, see ``kernels._onednn``); the activation is still applied:
    both towers agree with the reference within 1e-5."""
    seen = []
    original = torch.ops.mkldnn._linear_pointwise

    def recording(x, weight, bias, attr, scalars, algorithm):
        seen.append((attr, algorithm))
        return original(x, weight, bias, attr, scalars, algorithm)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", recording)
    model = _model()
    pixels, ids = _inputs()
    want = _features(model, REFERENCE, pixels, ids)
    got = _features(model, ONEDNN, pixels, ids)
    assert seen and set(seen) == {("none", "")}
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_reference_runs_the_code_path_of_a_model_without_a_choice(monkeypatch):
    """Bit-identical where the same kernels run: the reference choice never enters a chosen kernel, and gives the
    same bits as the towers called outside any kernel scope."""
    model = _model()
    pixels, ids = _inputs()
    with torch.no_grad():
        bare_image, bare_text = model.vision(pixels), model.text(ids)
    monkeypatch.setattr(kernels, "linear", lambda *a, **k: pytest.fail("a chosen kernel ran"))
    image, text = _features(model, REFERENCE, pixels, ids)
    assert torch.equal(image, bare_image) and torch.equal(text, bare_text)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_fp32_kernel(dtype, monkeypatch):
    """The fp32 GEMM kernel for half weights: features close to fp32's (cosine >= 0.999) and no further from
    them than the native half GEMM's (both accumulate in fp32 and round once: often the very same bits)."""
    calls = []
    monkeypatch.setattr(kernels, "_fp32", lambda x, w, b: calls.append(1) or F.linear(
        x.float(), w.float(), None if b is None else b.float()).to(x.dtype))
    reference = _model()
    pixels, ids = _inputs()
    exact_image, exact_text = _features(reference, REFERENCE, pixels, ids)
    half = _model().to(dtype)
    native = _features(half, REFERENCE, pixels, ids)
    upcast = _features(half, HALF_FP32, pixels, ids)
    for got, native_got, exact in zip(upcast, native, (exact_image, exact_text)):
        assert got.dtype == dtype
        assert got.shape == exact.shape
        cosine = float(F.cosine_similarity(got.double(), exact.double(), dim=-1).min())
        assert cosine >= 0.999
        err = float((got.double() - exact.double()).abs().max())
        assert err <= 1.5 * float((native_got.double() - exact.double()).abs().max()) + 1e-3
    assert calls  # the fp32 kernel did run


def test_gradients_do_not_depend_on_the_choice():
    """Training never meets a chosen kernel: gradients (with and without checkpointing) equal the reference's."""
    pixels, ids = _inputs()

    def grads(choice: KernelChoice, checkpointing: bool):
        model = _model().train().use_kernels(choice).set_gradient_checkpointing(checkpointing)
        torch.manual_seed(0)  # the same dropout masks
        out = model(pixels, ids, return_loss=True)
        out.loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for checkpointing in (False, True):
        want, got = grads(REFERENCE, checkpointing), grads(ONEDNN, checkpointing)
        assert want.keys() == got.keys() and len(want) > 10
        assert all(torch.equal(want[n], got[n]) for n in want)


def test_reordered_weight_follows_optimizer_steps_and_loads(onednn_calls):
    """After an optimizer step (in-place update) and after load_state_dict, the oneDNN kernel computes with the new
    weights (the QuickGELU MLP's scaled copies too): a stale reordered copy would keep the old features."""
    choice, calls = ONEDNN, onednn_calls
    model = _model().use_kernels(choice)
    pixels, ids = _inputs()
    before = _features(model, choice, pixels, ids)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(pixels, ids, return_loss=True).loss.backward()
    optimizer.step()
    model.eval()
    for state in (None, _model(seed=11).state_dict()):
        if state is not None:
            model.load_state_dict(state)
        count = len(calls)
        got = _features(model, choice, pixels, ids)
        assert len(calls) > count
        want = _features(model, REFERENCE, pixels, ids)
        assert not torch.allclose(got[0], before[0], atol=1e-3)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_packed_cache_keeps_one_copy_per_view():
    model = _model().use_kernels(ONEDNN)
    pixels, ids = _inputs()
    for _ in range(3):
        _features(model, ONEDNN, pixels, ids)
    qkv = model.vision.layers[-1].attn.qkv  # the last block reads two views (q rows, k|v rows) of one weight
    assert len(qkv.__dict__[kernels._PACKED_ATTR]) == 2
    with torch.no_grad():
        qkv.weight.mul_(1.0)  # a new version: the next call drops both old copies
    _features(model, ONEDNN, pixels, ids)
    assert len(qkv.__dict__[kernels._PACKED_ATTR]) == 2
    assert "_ernievil2_packed" not in str(list(model.state_dict()))


def test_lora_adapters_are_called_under_any_choice():
    """A LoRA-wrapped layer is called as a module (the adapter adds its term) whatever kernel is chosen."""
    from ernievil2torch.training.lora import DEFAULT_LORA_TARGETS, add_adapters, lora_spec

    base = _model()
    pixels, ids = _inputs()
    plain = _features(base, REFERENCE, pixels, ids)
    adapted = add_adapters(_model(), lora_spec(4, 8.0, 0.0, DEFAULT_LORA_TARGETS, None))
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    adapted.eval()
    want = _features(adapted, REFERENCE, pixels, ids)
    got = _features(adapted, ONEDNN, pixels, ids)
    assert not torch.allclose(want[0], plain[0], atol=1e-3)  # the adapters act
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_parse_kernels():
    assert parse_kernels("reference") == REFERENCE
    assert parse_kernels("fp32=onednn, bf16=fp32") == KernelChoice(float32="onednn", bfloat16="fp32")
    assert parse_kernels(ONEDNN.spec()) == ONEDNN
    for bad in ("onednn", "fp32=fp32", "bf16=onednn", "float32=mkl", "int8=reference", ""):
        with pytest.raises(InputError):
            parse_kernels(bad)


def test_kernel_record_names_only_a_non_reference_kernel():
    assert kernel_record(REFERENCE, torch.float32) == {}
    assert kernel_record(ONEDNN, torch.bfloat16) == {}
    assert kernel_record(ONEDNN, torch.float32) == {"kernels": "float32=onednn"}
    assert parse_kernels(kernel_record(HALF_FP32, torch.bfloat16)["kernels"]) == KernelChoice(bfloat16="fp32")


def test_measure_kernels_times_every_usable_kernel(monkeypatch):
    """Every usable kernel of every dtype is timed on whole blocks of both towers, as the model runs them: the
    ViT block's folded MLP under the oneDNN candidate, the ERNIE block's exact GELU, the reference modules."""
    from ernievil2torch.modeling import layers

    folded, gelus = [], []
    original_fold, original_linear = layers.scaled_silu_linear, layers.linear
    monkeypatch.setattr(layers, "scaled_silu_linear", lambda *a, **k: folded.append(1) or original_fold(*a, **k))
    monkeypatch.setattr(layers, "linear", lambda *a, **k: gelus.append(k.get("gelu", a[-1] if len(a) > 4 else False))
                        or original_linear(*a, **k))
    measured = measure_kernels(tiny_config(), rounds=1, repeats=1)
    assert folded, "the ViT block's MLP did not run its oneDNN fold"
    assert True in gelus, "the text block's fc1 + GELU did not run under a chosen kernel"
    assert set(measured.gflops) == {"float32", "bfloat16", "float16"}
    assert set(measured.gflops["float32"]) == {"reference", "onednn"}
    assert set(measured.gflops["bfloat16"]) == {"reference", "fp32"}
    assert all(rate > 0 for rates in measured.gflops.values() for rate in rates.values())
    assert "float32" in measured.summary()


def test_resolve_env_then_cache_then_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(KERNELS_ENV, "float32=onednn")
    assert resolve_kernels() == ONEDNN  # the variable wins and nothing is measured or written
    assert not cache_path().exists()
    with pytest.raises(InputError, match=KERNELS_ENV):
        monkeypatch.setenv(KERNELS_ENV, "float32=nothing")
        resolve_kernels()
    assert resolve_kernels("bf16=fp32") == KernelChoice(bfloat16="fp32")  # an explicit spec beats the variable

    monkeypatch.delenv(KERNELS_ENV)
    measured = []
    real = kernel_choice.measure_kernels
    monkeypatch.setattr(kernel_choice, "measure_kernels",
                        lambda: measured.append(1) or real(tiny_config(), rounds=1, repeats=1))
    first = resolve_kernels()
    assert measured == [1] and cache_path() == tmp_path / "ernievil2torch" / "kernels.json"
    entry = json.loads(cache_path().read_text())[machine_key()]
    assert KernelChoice(**entry["choice"]) == first and "gflops" in entry
    assert resolve_kernels() == first and measured == [1]  # cached: not measured again
    cache_path().write_text("{damaged")
    resolve_kernels()
    assert measured == [1, 1]  # a damaged cache is measured again and rewritten
    json.loads(cache_path().read_text())


def test_from_pretrained_takes_the_resolved_choice(tmp_path, monkeypatch):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    monkeypatch.setenv(KERNELS_ENV, "fp32=onednn")
    assert ErnieViL2.from_pretrained(tmp_path / "m").kernels == ONEDNN
    assert ErnieViL2.from_pretrained(tmp_path / "m", kernels=None).kernels == REFERENCE
    assert ErnieViL2.from_pretrained(tmp_path / "m", kernels="reference").kernels == REFERENCE
    with pytest.raises(TypeError):
        model.use_kernels("onednn")


def test_autocast_and_compiler_tracing_take_the_reference(onednn_calls, monkeypatch):
    """CPU autocast casts inside the reference ops, and a compiler traces the reference graph: neither may meet a
    chosen kernel (oneDNN's fp32 op would silently skip autocast's bf16)."""
    model = _model()
    pixels, ids = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _features(model, REFERENCE, pixels, ids)
        got = _features(model, ONEDNN, pixels, ids)
    assert not onednn_calls
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with kernels.kernel_scope(ONEDNN):
        assert kernels.chosen_kernel(pixels) == "reference"


def test_kernel_report_names_the_source(tmp_path, monkeypatch):
    """``ernievil2 kernels``: the variable, else the cache, else (or with measure) a fresh measurement, cached."""
    from ernievil2torch.modeling.kernel_choice import kernel_report

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(KERNELS_ENV, "fp32=onednn")
    report = kernel_report()
    assert report.source == "environment" and report.choice == ONEDNN and KERNELS_ENV in report.summary()
    real = kernel_choice.measure_kernels
    monkeypatch.setattr(kernel_choice, "measure_kernels", lambda: real(tiny_config(), rounds=1, repeats=1))
    measured = kernel_report(measure=True)  # --measure ignores the variable and rewrites the cache
    assert measured.source == "measured" and "GFLOP/s" in measured.summary() and cache_path().is_file()
    monkeypatch.delenv(KERNELS_ENV)
    again = kernel_report()
    assert again.source == "cache" and again.choice == measured.choice
    assert f"{KERNELS_ENV}={again.choice.spec()}" in again.summary()
