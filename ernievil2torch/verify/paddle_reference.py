"""An independent PaddlePaddle implementation of the OFFICIAL ERNIE-ViL 2.0 architecture.

This module is a test oracle, written for this project from the architecture of Baidu's release
(``PaddlePaddle/ERNIE``, branch ``ernie-kit-open-v1.0``, ``Research/ERNIE-ViL2``): its ``state_dict()`` uses exactly the
official key names and Paddle shapes (``visual.*``, ``text_model.*``, ``contrastive_loss_mm.temperature_b``), so an
official ``.pdparams`` loads into it without any renaming. It imports ``paddle`` at module level and is only imported
when Paddle is wanted (tests, checks); the torch package never depends on it.

Architecture, as in the official code:

* image tower (``visual``): Conv patch embedding without bias; prepend ``class_embedding`` [1,1,D], add
  ``positional_embedding`` [1,N+1,D], ``norm_pre``; pre-norm blocks ``x += attn(norm1(x))``, ``x += mlp(norm2(x))``
  with a fused ``qkv`` Linear whose output columns are ``q|k|v``, each head-major, scale ``head_dim**-0.5``, and an MLP
  ``fc1 -> QuickGELU -> fc2``; ``norm_post`` over all tokens; the feature is token 0. All norms use eps 1e-6.
* text tower (``text_model``, ERNIE 3.0): word + position embeddings (positions 0..L-1), ``ln``; post-norm blocks
  ``h = ln1(x + o(attn))``, ``out = ln2(h + ffn.o(gelu_erf(ffn.i(h))))``; separate q/k/v/o Linears, scale
  ``head_dim**-0.5``; additive bias ``(1 - m m^T) * -10000`` with ``m = input_ids != 0`` (the official outer-product
  mask); feature ``tanh(pooler(h[:, 0]))``. All norms use Paddle's default eps 1e-5.
* scoring: ``logit_scale = exp(contrastive_loss_mm.temperature_b)``.
* loss (``run_reference_backward``, Baidu's ``ContrastiveHead``): L2-normalised features, ``logits_per_image =
  scale * img @ txt^T``, ``logits_per_text = scale * txt @ img^T``, mean cross-entropy against ``arange`` each way,
  averaged; no clamp. The reference has no dropout, which is what a dropout-0 training step computes.

Independence from the code it checks: the fixed values of the architecture (epsilons, head size, activation, mask
bias, pad id) are written out below from the official code (``../shared/SPEC.md``), and the sizes the official code
takes from its config (layers, widths, vocabulary, image size) are read from the shapes of the state dict it is
given (:meth:`ReferenceSizes.from_state`). Nothing comes from ``ernievil2torch.config`` or
``ernievil2torch.constants``: a wrong value there (say a text LayerNorm eps of 1e-6) makes the PyTorch port disagree
with this reference, instead of being copied into both (``tests/verify/test_parity.py`` shows that it does).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = [
    "PaddleErnieViL2",
    "ReferenceSizes",
    "load_official_state",
    "run_reference",
    "run_reference_backward",
    "IGNORED_OFFICIAL_KEYS",
]

# ---- the official architecture's fixed values (SPEC.md), deliberately not imported from the package -------------
TEXT_LAYER_NORM_EPS = 1e-5     # Paddle's nn.LayerNorm default, used by all 25 text norms of the official model
VISION_LAYER_NORM_EPS = 1e-6   # all 26 vision norms
HEAD_DIM = 64                  # both towers: heads = width / 64 (12 heads at width 768)
QUICK_GELU_ALPHA = 1.702       # the ViT MLP's activation: x * sigmoid(1.702 x)
MASK_BIAS = -10000.0           # additive bias on masked (padding) keys of the text tower
PAD_TOKEN_ID = 0               # the mask is input_ids != 0
NUM_CHANNELS = 3               # RGB
TEMPERATURE_INIT = 2.65926     # contrastive_loss_mm.temperature_b before loading

# Left over in the released file from a classification head the released code never builds.
IGNORED_OFFICIAL_KEYS = ("visual.classfy.weight", "visual.classfy.bias")


@dataclass(frozen=True)
class ReferenceSizes:
    """The sizes the official code takes from its config (the Base release's values as defaults)."""

    vocab_size: int = 40000
    text_hidden: int = 768
    text_layers: int = 12
    text_intermediate: int = 3072
    max_positions: int = 2048
    image_size: int = 224
    patch_size: int = 16
    vision_hidden: int = 768
    vision_layers: int = 12
    vision_intermediate: int = 3072
    has_temperature: bool = True

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "ReferenceSizes":
        """Read the sizes from an official-layout state dict (values: arrays, or anything with ``.shape``).

        Raises ``ValueError`` when a key the sizes are read from is missing or a width is not a multiple of 64.
        """
        def shape(key: str) -> tuple:
            if key not in state:
                raise ValueError(f"not an official-layout ERNIE-ViL 2.0 state: no '{key}'")
            return tuple(int(d) for d in state[key].shape)

        def count(pattern: str) -> int:
            return len({m.group(1) for m in map(re.compile(pattern).fullmatch, state) if m})

        vocab_size, text_hidden = shape("text_model.word_emb.weight")
        max_positions = shape("text_model.pos_emb.weight")[0]
        vision_hidden, channels, patch_size, _ = shape("visual.patch_embed.proj.weight")
        patches = shape("visual.positional_embedding")[1] - 1
        grid = math.isqrt(patches)
        if grid * grid != patches:
            raise ValueError(f"{patches} patch positions do not form a square grid")
        sizes = cls(
            vocab_size=vocab_size, text_hidden=text_hidden,
            text_layers=count(r"text_model\.encoder_stack\.block\.(\d+)\.attn\.q\.weight"),
            text_intermediate=shape("text_model.encoder_stack.block.0.ffn.i.weight")[1],
            max_positions=max_positions, image_size=grid * patch_size, patch_size=patch_size,
            vision_hidden=vision_hidden, vision_layers=count(r"visual\.blocks\.(\d+)\.attn\.qkv\.weight"),
            vision_intermediate=shape("visual.blocks.0.mlp.fc1.weight")[1],
            has_temperature="contrastive_loss_mm.temperature_b" in state)
        if channels != NUM_CHANNELS or text_hidden % HEAD_DIM or vision_hidden % HEAD_DIM:
            raise ValueError(f"not the official architecture: {channels} input channels, widths {text_hidden} / "
                             f"{vision_hidden} (heads of {HEAD_DIM})")
        return sizes


def _layer_norm(dim: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(dim, epsilon=eps)


# --------------------------------------------------------------------------------------------------------------
# Image tower
# --------------------------------------------------------------------------------------------------------------
class _PatchEmbed(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        self.image_size = sizes.image_size
        self.proj = nn.Conv2D(NUM_CHANNELS, sizes.vision_hidden, kernel_size=sizes.patch_size,
                              stride=sizes.patch_size, bias_attr=False)

    def forward(self, x):
        if x.shape[-2] != self.image_size or x.shape[-1] != self.image_size:
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {list(x.shape)}")
        x = self.proj(x)                               # [B, D, g, g]
        x = x.flatten(start_axis=2)                    # [B, D, g*g]
        return x.transpose([0, 2, 1])                  # [B, g*g, D]


class _FusedAttention(nn.Layer):
    def __init__(self, dim: int):
        super().__init__()
        self.num_heads = dim // HEAD_DIM
        self.head_dim = HEAD_DIM
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, self.head_dim])
        qkv = qkv.transpose([2, 0, 3, 1, 4])           # [3, B, H, N, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = paddle.matmul(q, k, transpose_y=True) * (self.head_dim ** -0.5)
        probs = F.softmax(scores, axis=-1)
        out = paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([b, n, d])
        return self.proj(out)


class _VisionMlp(nn.Layer):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.fc1(x)
        h = h * F.sigmoid(QUICK_GELU_ALPHA * h)        # QuickGELU
        return self.fc2(h)


class _VisionBlock(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        self.norm1 = _layer_norm(sizes.vision_hidden, VISION_LAYER_NORM_EPS)
        self.attn = _FusedAttention(sizes.vision_hidden)
        self.norm2 = _layer_norm(sizes.vision_hidden, VISION_LAYER_NORM_EPS)
        self.mlp = _VisionMlp(sizes.vision_hidden, sizes.vision_intermediate)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _VisionTower(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        d = sizes.vision_hidden
        self.patch_embed = _PatchEmbed(sizes)
        init = nn.initializer.Normal(std=d ** -0.5)
        self.class_embedding = self.create_parameter(shape=[1, 1, d], default_initializer=init)
        self.positional_embedding = self.create_parameter(shape=[1, sizes.num_positions, d],
                                                          default_initializer=init)
        self.norm_pre = _layer_norm(d, VISION_LAYER_NORM_EPS)
        self.blocks = nn.LayerList([_VisionBlock(sizes) for _ in range(sizes.vision_layers)])
        self.norm_post = _layer_norm(d, VISION_LAYER_NORM_EPS)

    def forward(self, pixel_values):
        x = self.patch_embed(pixel_values)
        cls = self.class_embedding.expand([x.shape[0], 1, x.shape[-1]])
        x = paddle.concat([cls, x], axis=1) + self.positional_embedding
        x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x)
        return self.norm_post(x)                       # all tokens; the feature is token 0


# --------------------------------------------------------------------------------------------------------------
# Text tower
# --------------------------------------------------------------------------------------------------------------
class _TextAttention(nn.Layer):
    def __init__(self, dim: int):
        super().__init__()
        self.num_heads = dim // HEAD_DIM
        self.head_dim = HEAD_DIM
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def _split(self, t):
        b, n, _ = t.shape
        return t.reshape([b, n, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])

    def forward(self, x, attn_bias):
        b, n, d = x.shape
        q = self._split(self.q(x)) * (self.head_dim ** -0.5)
        k = self._split(self.k(x))
        v = self._split(self.v(x))
        scores = paddle.matmul(q, k, transpose_y=True) + attn_bias
        probs = F.softmax(scores, axis=-1)
        out = paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([b, n, d])
        return self.o(out)


class _TextFfn(nn.Layer):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.i = nn.Linear(dim, hidden)
        self.o = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.o(F.gelu(self.i(x), approximate=False))


class _TextBlock(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        self.attn = _TextAttention(sizes.text_hidden)
        self.ln1 = _layer_norm(sizes.text_hidden, TEXT_LAYER_NORM_EPS)
        self.ffn = _TextFfn(sizes.text_hidden, sizes.text_intermediate)
        self.ln2 = _layer_norm(sizes.text_hidden, TEXT_LAYER_NORM_EPS)

    def forward(self, x, attn_bias):
        h = self.ln1(x + self.attn(x, attn_bias))
        return self.ln2(h + self.ffn(h))


class _EncoderStack(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        self.block = nn.LayerList([_TextBlock(sizes) for _ in range(sizes.text_layers)])

    def forward(self, x, attn_bias):
        for blk in self.block:
            x = blk(x, attn_bias)
        return x


class _TextTower(nn.Layer):
    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        d = sizes.text_hidden
        self.max_positions = sizes.max_positions
        # Official order of construction: ln, word_emb, pos_emb, encoder_stack, pooler.
        self.ln = _layer_norm(d, TEXT_LAYER_NORM_EPS)
        self.word_emb = nn.Embedding(sizes.vocab_size, d)   # no padding_idx in the official model
        self.pos_emb = nn.Embedding(sizes.max_positions, d)
        self.encoder_stack = _EncoderStack(sizes)
        self.pooler = nn.Linear(d, d)

    def forward(self, input_ids):
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq], got {list(input_ids.shape)}")
        seq_len = input_ids.shape[1]
        if seq_len > self.max_positions:
            raise ValueError(f"sequence of {seq_len} tokens exceeds {self.max_positions} positions")
        pos_ids = paddle.arange(seq_len, dtype="int64").reshape([1, -1])
        # Official mask: m = (ids != pad); bias = (1 - m m^T) * -10000, the same for every head.
        m = paddle.cast(input_ids != PAD_TOKEN_ID, "float32").unsqueeze(-1)            # [B, L, 1]
        attn_bias = (1.0 - paddle.matmul(m, m, transpose_y=True)) * MASK_BIAS           # [B, L, L]
        attn_bias = attn_bias.unsqueeze(1)                                              # [B, 1, L, L]
        x = self.word_emb(input_ids) + self.pos_emb(pos_ids)
        x = self.ln(x)
        x = self.encoder_stack(x, attn_bias)
        pooled = paddle.tanh(self.pooler(x[:, 0]))
        return pooled, x


class _ContrastiveHead(nn.Layer):
    def __init__(self):
        super().__init__()
        self.temperature_b = self.create_parameter(
            shape=[1], default_initializer=nn.initializer.Constant(TEMPERATURE_INIT))


# --------------------------------------------------------------------------------------------------------------
# Dual model
# --------------------------------------------------------------------------------------------------------------
class PaddleErnieViL2(nn.Layer):
    """Official-layout ERNIE-ViL 2.0 dual encoder in Paddle (eval only; no dropout).

    ``PaddleErnieViL2(ReferenceSizes())`` is the released Base model; :meth:`from_official_state` builds the model
    a state dict describes and loads it.
    """

    def __init__(self, sizes: ReferenceSizes):
        super().__init__()
        self.sizes = sizes
        self.visual = _VisionTower(sizes)
        self.text_model = _TextTower(sizes)
        self.contrastive_loss_mm = _ContrastiveHead() if sizes.has_temperature else None

    @classmethod
    def from_official_state(cls, state: Mapping[str, Any]) -> "PaddleErnieViL2":
        """The model of the sizes ``state``'s shapes describe, with ``state`` loaded strictly, in eval mode."""
        model = cls(ReferenceSizes.from_state(state))
        load_official_state(model, state)
        model.eval()
        return model

    def encode_image(self, pixel_values):
        """``norm_post(tokens)[:, 0]``: [B, D], no projection, not normalised."""
        if not isinstance(pixel_values, paddle.Tensor):
            pixel_values = paddle.to_tensor(np.asarray(pixel_values, dtype=np.float32))
        return self.visual(pixel_values)[:, 0]

    def encode_text(self, input_ids):
        """``tanh(pooler(h[:, 0]))``: [B, D], mask from ``input_ids != 0``."""
        if not isinstance(input_ids, paddle.Tensor):
            input_ids = paddle.to_tensor(np.asarray(input_ids, dtype=np.int64))
        return self.text_model(input_ids)[0]

    @property
    def logit_scale(self):
        """``exp(temperature_b)`` as a 1-element tensor, or None when the model has no temperature."""
        if self.contrastive_loss_mm is None:
            return None
        return paddle.exp(self.contrastive_loss_mm.temperature_b)

    def forward(self, pixel_values, input_ids):
        img = F.normalize(self.encode_image(pixel_values), axis=-1)
        txt = F.normalize(self.encode_text(input_ids), axis=-1)
        logits = paddle.matmul(img, txt, transpose_y=True)
        scale = self.logit_scale
        if scale is not None:
            logits = logits * scale
        return logits


def load_official_state(model: PaddleErnieViL2, state: Mapping[str, Any]) -> None:
    """Load an official-layout state dict strictly.

    Every parameter of ``model`` must be present with exactly its shape; ``visual.classfy.weight/bias`` are dropped;
    any other extra key, missing key or shape mismatch raises ``ValueError`` naming the offending keys.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: v for k, v in state.items() if k not in IGNORED_OFFICIAL_KEYS}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = []
    arrays = {}
    for key in sorted(set(expected) & set(given)):
        arr = np.asarray(given[key])
        if tuple(arr.shape) != expected[key]:
            mismatched.append(f"{key}: file {tuple(arr.shape)} vs model {expected[key]}")
            continue
        arrays[key] = np.ascontiguousarray(arr, dtype=np.float32)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched}")
        raise ValueError("official state does not fit the model: " + "; ".join(parts))
    params = model.state_dict()
    for key, arr in arrays.items():
        params[key].set_value(arr)
    # Check the values really landed (guards against silent no-ops in set_value).
    for key, arr in arrays.items():
        if not np.array_equal(params[key].numpy(), arr):
            raise ValueError(f"failed to assign {key}")


def run_reference(state: Mapping[str, Any], pixel_values: np.ndarray, input_ids: np.ndarray) -> dict[str, Any]:
    """Build the reference the official-layout ``state`` describes on CPU, load it strictly and return numpy
    float32 outputs.

    Keys: ``image_features`` [I, D], ``text_features`` [T, D] (both unnormalised), ``logit_scale`` (float or None),
    ``logits_per_image`` [I, T] = scale * cosine (plain cosine when there is no temperature).
    """
    paddle.set_device("cpu")
    model = PaddleErnieViL2.from_official_state(state)
    with paddle.no_grad():
        pix = paddle.to_tensor(np.asarray(pixel_values, dtype=np.float32))
        ids = paddle.to_tensor(np.asarray(input_ids, dtype=np.int64))
        img = model.encode_image(pix)
        txt = model.encode_text(ids)
        cos = paddle.matmul(F.normalize(img, axis=-1), F.normalize(txt, axis=-1), transpose_y=True)
        scale = model.logit_scale
        logits = cos * scale if scale is not None else cos
        return {
            "image_features": img.numpy().astype(np.float32),
            "text_features": txt.numpy().astype(np.float32),
            "logit_scale": None if scale is None else float(scale.numpy().reshape(-1)[0]),
            "logits_per_image": logits.numpy().astype(np.float32),
        }


def run_reference_backward(state: Mapping[str, Any], pixel_values: np.ndarray, input_ids: np.ndarray
                           ) -> dict[str, Any]:
    """One training step's forward and backward of the reference: the contrastive loss of the paired batch
    (image i with text i) and its gradients, as float32 numpy.

    Returns ``loss`` (float), ``grads`` ({official key: gradient in the parameter's Paddle layout, e.g. Linear
    [in, out]}) and ``pixel_grad`` [B, 3, S, S]. Needs a temperature and as many texts as images.
    """
    if len(pixel_values) != len(input_ids):
        raise ValueError(f"{len(pixel_values)} images but {len(input_ids)} texts: the loss pairs them row by row")
    paddle.set_device("cpu")
    model = PaddleErnieViL2.from_official_state(state)
    if model.contrastive_loss_mm is None:
        raise ValueError("the contrastive loss needs the temperature")
    model.train()
    pix = paddle.to_tensor(np.asarray(pixel_values, dtype=np.float32), stop_gradient=False)
    ids = paddle.to_tensor(np.asarray(input_ids, dtype=np.int64))
    img = F.normalize(model.encode_image(pix), axis=-1)
    txt = F.normalize(model.encode_text(ids), axis=-1)
    scale = model.logit_scale
    logits_per_image = scale * paddle.matmul(img, txt, transpose_y=True)
    logits_per_text = scale * paddle.matmul(txt, img, transpose_y=True)
    labels = paddle.arange(len(input_ids), dtype="int64")
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    if missing:
        raise RuntimeError(f"no gradient reached {missing[:5]}")
    return {"loss": float(loss.numpy().reshape(-1)[0]),
            "grads": {name: p.grad.numpy().astype(np.float32) for name, p in model.named_parameters()},
            "pixel_grad": pix.grad.numpy().astype(np.float32)}
