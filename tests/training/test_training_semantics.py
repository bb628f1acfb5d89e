"""Training semantics of the model: dropout where the official code has it, the loss, gradients through every fast
path (class-token-only last block, fused qkv + SDPA, padding trim, in-place QuickGELU skipped), checkpointing."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ernievil2torch.config import ErnieViL2Config, TextConfig, VisionConfig, tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.modeling.layers import attention_bias, quick_gelu
from ernievil2torch.modeling.loss import contrastive_loss
from ernievil2torch.verify.parity import synthetic_inputs, torch_training_step
from ernievil2torch.verify.synthetic import random_state


def with_dropout(config: ErnieViL2Config, text=(0.0, 0.0), vision=(0.0, 0.0)) -> ErnieViL2Config:
    return dataclasses.replace(
        config, text=dataclasses.replace(config.text, hidden_dropout=text[0], attention_dropout=text[1]),
        vision=dataclasses.replace(config.vision, hidden_dropout=vision[0], attention_dropout=vision[1]))


def model_for(config: ErnieViL2Config, seed: int = 4) -> ErnieViL2:
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, seed, unit_gain=True).items()})
    return model


def batch(config: ErnieViL2Config, lengths=(8, 30, 5, 17), seed: int = 2):
    inputs = synthetic_inputs(config, seed=seed, images=len(lengths), lengths=lengths)
    return torch.from_numpy(inputs.pixel_values), torch.from_numpy(inputs.input_ids)


# ---- config ----------------------------------------------------------------------------------------------------
def test_dropout_defaults_are_the_official_ones():
    config = ErnieViL2Config()
    assert (config.text.hidden_dropout, config.text.attention_dropout) == (0.1, 0.1)
    assert (config.vision.hidden_dropout, config.vision.attention_dropout) == (0.0, 0.0)
    assert "hidden_dropout" in config.to_dict()["text"] and "attention_dropout" in config.to_dict()["vision"]


def test_config_json_without_dropout_fields_loads_with_defaults(tmp_path):
    """A config.json without the dropout fields loads, with the official values."""
    model = model_for(tiny_config())
    model.save_pretrained(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    for part in ("text", "vision"):
        del data[part]["hidden_dropout"], data[part]["attention_dropout"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(data))
    loaded = ErnieViL2.from_pretrained(tmp_path / "m")
    assert (loaded.config.text.hidden_dropout, loaded.config.text.attention_dropout) == (0.1, 0.1)
    assert (loaded.config.vision.hidden_dropout, loaded.config.vision.attention_dropout) == (0.0, 0.0)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.1", True])
def test_invalid_dropout_in_config_json_is_refused(tmp_path, value):
    from ernievil2torch.errors import CheckpointError

    model_for(tiny_config()).save_pretrained(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    data["text"]["hidden_dropout"] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="hidden_dropout"):
        ErnieViL2.from_pretrained(tmp_path / "m")


# ---- dropout ---------------------------------------------------------------------------------------------------
def test_eval_output_is_independent_of_dropout_settings():
    """eval() is the inference computation whatever the dropout rates: bit-identical features and logits."""
    pixels, ids = batch(tiny_config())
    plain = model_for(with_dropout(tiny_config())).eval()
    heavy = model_for(with_dropout(tiny_config(), text=(0.5, 0.5), vision=(0.5, 0.5))).eval()
    with torch.no_grad():
        a, b = plain(pixels, ids), heavy(pixels, ids)
    for name in ("image_embeds", "text_embeds", "logits_per_image"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_train_mode_enables_text_dropout_only_by_default():
    config = tiny_config()  # official defaults: text 0.1 / 0.1, vision 0 / 0
    model = model_for(config)
    pixels, ids = batch(config)
    with torch.no_grad():
        model.eval()
        image_eval, text_eval = model.encode_image(pixels), model.encode_text(ids)
        model.train()
        torch.manual_seed(0)
        text_a = model.encode_text(ids)
        torch.manual_seed(1)
        text_b = model.encode_text(ids)
        image_train = model.encode_image(pixels)
    assert not torch.equal(text_a, text_eval) and not torch.equal(text_a, text_b)
    assert torch.equal(image_train, image_eval)  # the released ViT has no dropout


def one_layer_text_model(hidden: float, attention: float) -> ErnieViL2:
    config = tiny_config()
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, num_layers=1))
    return model_for(with_dropout(config, text=(hidden, attention))).train()


def test_hidden_dropout_sites_are_the_official_ones():
    """With hidden_dropout = 1 every official site outputs zeros: after the embedding LayerNorm and on the attention
    and MLP outputs before their residual adds. The feature then no longer depends on the text and equals
    ``tanh(pooler(LN2(LN1(0))))``; a missing or misplaced site would leave a dependence on the input."""
    model = one_layer_text_model(hidden=1.0, attention=0.0)
    text, block = model.text, model.text.layers[0]
    _, ids = batch(model.config)
    with torch.no_grad():
        zero = torch.zeros(1, model.config.text.hidden_size)
        expected = torch.tanh(text.pooler(block.norm2(block.norm1(zero))))
        got = model.encode_text(ids)
    torch.testing.assert_close(got, expected.expand_as(got), atol=1e-6, rtol=0)


def test_attention_dropout_acts_on_the_probabilities():
    """With attention_dropout = 1 every attention output is ``out_proj(0)``: the rest of the block is untouched
    (embedding LayerNorm output, the residual add, the MLP), which pins the site to the attention probabilities."""
    model = one_layer_text_model(hidden=0.0, attention=1.0)
    text, block = model.text, model.text.layers[0]
    _, ids = batch(model.config)
    with torch.no_grad():
        x = text.embeddings.norm(text.embeddings.word_embeddings(ids) + text.embeddings.position_embeddings.weight[
            :ids.shape[1]])
        h = block.norm1(x + block.attn.out_proj.bias)
        expected = torch.tanh(text.pooler(block.norm2(h + block.mlp(h))[:, 0]))
        got = model.encode_text(ids)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# ---- loss ------------------------------------------------------------------------------------------------------
def numpy_clip_loss(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image.astype(np.float64) @ text.T.astype(np.float64)

    def ce(z):
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - np.diag(z)))
    return (ce(logits) + ce(logits.T)) / 2


def test_contrastive_loss_is_the_symmetric_clip_loss():
    from ernievil2torch.training import contrastive_loss as exported

    assert exported is contrastive_loss
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    scale = torch.tensor([14.3])
    got = contrastive_loss(image, text, scale)
    assert got.shape == () and got.dtype == torch.float32
    assert contrastive_loss(image.double(), text.double(), scale).dtype == torch.float64
    assert abs(float(got) - numpy_clip_loss(image.numpy(), text.numpy(), 14.3)) < 1e-5
    assert abs(float(contrastive_loss(image, text, None)) - numpy_clip_loss(image.numpy(), text.numpy(), 1.0)) < 1e-5
    perfect = torch.eye(4) * 5
    assert float(contrastive_loss(perfect, perfect, 100.0)) < 1e-6
    with pytest.raises(ValueError, match="paired"):
        contrastive_loss(image, text[:5], scale)
    with pytest.raises(ValueError, match="at least one"):
        contrastive_loss(image[:0], text[:0], scale)


def test_return_loss_gives_the_loss_of_the_batch():
    model = model_for(tiny_config()).eval()
    pixels, ids = batch(model.config)
    with torch.no_grad():
        out = model(pixels, ids, return_loss=True)
        assert model(pixels, ids).loss is None
    expected = numpy_clip_loss(out.image_embeds.numpy(), out.text_embeds.numpy(), float(model.logit_scale.detach()))
    assert abs(float(out.loss) - expected) < 1e-5
    # logits_per_image carries the same scaled cosines the loss uses
    logits = model.logit_scale * F.normalize(out.image_embeds, dim=-1) @ F.normalize(out.text_embeds, dim=-1).T
    torch.testing.assert_close(out.logits_per_image, logits, atol=1e-5, rtol=0)


def test_loss_is_float32_under_bf16_autocast():
    model = model_for(tiny_config()).train()
    pixels, ids = batch(model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels, ids, return_loss=True)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---- gradients through the fast paths --------------------------------------------------------------------------
def plain_features(model: ErnieViL2, pixels: torch.Tensor, ids: torch.Tensor):
    """The unoptimised definition: every token through every block, nothing trimmed, the mask always applied."""
    vision, text = model.vision, model.text
    image = vision.norm_post(vision.forward_tokens(pixels, first_token_only=False)[:, 0])
    hidden = text.forward_tokens(ids, attention_bias(ids != 0, torch.float32), first_token_only=False)
    return image, torch.tanh(text.pooler(hidden[:, 0]))


def grads_of(model: ErnieViL2, loss: torch.Tensor):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_fast_path_gradients_equal_the_plain_definition():
    """[CLS]-only last block, fused qkv through SDPA, trimmed batch-wide padding: same gradients as the plain
    computation (within float32 round-off), for every parameter."""
    model = model_for(with_dropout(tiny_config())).train()
    pixels, ids = batch(model.config)
    padded = torch.cat([ids, torch.zeros(ids.shape[0], 9, dtype=ids.dtype)], dim=1)  # trailing columns trimmed
    fast = grads_of(model, model(pixels, padded, return_loss=True).loss)
    image, text = plain_features(model, pixels, padded)
    plain = grads_of(model, contrastive_loss(image, text, model.logit_scale))
    for name, grad in plain.items():
        scale = float(grad.abs().max())
        assert float((fast[name] - grad).abs().max()) <= 1e-5 * scale + 1e-12, name


def micro_config() -> ErnieViL2Config:
    return ErnieViL2Config(
        text=TextConfig(vocab_size=30, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
                        max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0),
        vision=VisionConfig(image_size=8, patch_size=4, hidden_size=8, num_layers=2, num_heads=2,
                            intermediate_size=16),
        model_type="ernie_vil_2.0_custom")


def test_backward_is_the_derivative_gradcheck():
    """torch.autograd.gradcheck (float64 finite differences) of the training loss with respect to the pixels, the
    temperature and the fused qkv weights of both last blocks (the [CLS]-only path slices them), with padded texts:
    no fast path or in-place op breaks autograd."""
    config = micro_config()
    model = model_for(config).double().train()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    ids = torch.tensor([[1, 5, 6, 2, 0, 0, 0], [1, 7, 2, 0, 0, 0, 0], [1, 8, 9, 10, 11, 2, 0]])
    names = ["temperature", "vision.layers.1.attn.qkv.weight", "text.layers.1.attn.qkv.weight",
             "vision.layers.1.mlp.fc1.bias"]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in names}

    def loss(pixels, *values):
        overrides = dict(zip(names, values))
        return torch.func.functional_call(model, overrides, (pixels, ids), {"return_loss": True}).loss

    assert torch.autograd.gradcheck(loss, (pixels.requires_grad_(True), *[params[n] for n in names]),
                                    eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_quick_gelu_runs_in_place_only_without_autograd():
    x = torch.randn(4, 5, requires_grad=True)
    y = quick_gelu(x)
    y.sum().backward()
    s = torch.sigmoid(1.702 * x.detach())
    torch.testing.assert_close(x.grad, s + 1.702 * x.detach() * s * (1 - s))
    assert y.grad_fn is not None
    with torch.no_grad():
        assert torch.equal(quick_gelu(x), x * torch.sigmoid(1.702 * x))


def test_gradient_checkpointing_gives_the_same_gradients_with_dropout():
    """Checkpointed blocks replay their dropout masks: same loss and gradients as storing the activations."""
    model = model_for(with_dropout(tiny_config(), text=(0.1, 0.1), vision=(0.1, 0.1))).train()
    pixels, ids = batch(model.config)
    torch.manual_seed(5)
    plain_loss = model(pixels, ids, return_loss=True).loss
    plain = grads_of(model, plain_loss)
    model.set_gradient_checkpointing(True)
    torch.manual_seed(5)
    ckpt_loss = model(pixels, ids, return_loss=True).loss
    ckpt = grads_of(model, ckpt_loss)
    assert plain_loss.item() == ckpt_loss.item()
    for name, grad in plain.items():
        assert float((ckpt[name] - grad).abs().max()) <= 1e-6 * float(grad.abs().max()) + 1e-12, name
    with torch.no_grad():  # inference ignores the flag
        model.eval()
        assert torch.equal(model.set_gradient_checkpointing(True).encode_text(ids),
                           model.set_gradient_checkpointing(False).encode_text(ids))


def test_training_step_reaches_every_parameter():
    model = model_for(tiny_config())
    pixels, ids = batch(model.config)
    loss, grads = torch_training_step(model, pixels.numpy(), ids.numpy())
    assert np.isfinite(loss) and set(grads) == {n for n, _ in model.named_parameters()} | {"pixel_values"}
    assert all(np.abs(g).max() > 0 for g in grads.values())
