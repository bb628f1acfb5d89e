"""Building blocks shared by both towers: the attention-bias builder, fused-qkv self-attention, the MLP."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..constants import MASK_BIAS
from .kernels import REFERENCE_KERNEL, chosen_kernel, folds_scales, linear, scaled_addmm, scaled_silu_linear


def attention_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive key mask ``[B, 1, 1, L]`` for :func:`~torch.nn.functional.scaled_dot_product_attention`.

    ``keep`` is ``[B, L]`` (bool or 0/1): 1 for a real token, 0 for padding. Kept keys get 0, padded keys
    ``MASK_BIAS`` (-10000, Paddle's constant rather than -inf, so a row that is all padding stays finite). Masking
    keys only is enough: the official outer-product mask differs on padded query rows alone, which never reach
    the [CLS] feature. Pure tensor arithmetic with no host sync: the same builder serves eager, compiled and ONNX.
    """
    return ((1.0 - keep.to(dtype)) * MASK_BIAS)[:, None, None, :]


QUICK_GELU_SLOPE = 1.702

_PATHS = threading.local()


@contextlib.contextmanager
def autograd_paths() -> Iterator[None]:
    """Within this block the layers take the code path they take under autograd even where autograd is off.

    The inference fast paths below (in-place QuickGELU, the half-precision MLP) compute the same function with
    another order of roundings. A computation that must be replayed exactly with gradient (the gradient cache's
    first, no-grad encoding) runs inside this block, so both passes execute the same kernels on the same inputs.
    """
    previous = getattr(_PATHS, "autograd", False)
    _PATHS.autograd = True
    try:
        yield
    finally:
        _PATHS.autograd = previous


def _autograd_path(x: torch.Tensor, weight_requires_grad: bool = False) -> bool:
    """Whether a layer takes its autograd (training) path for input ``x``."""
    if getattr(_PATHS, "autograd", False):
        return True
    return torch.is_grad_enabled() and (x.requires_grad or weight_requires_grad)


def plain_linear(module: nn.Module) -> bool:
    """True when ``module`` is exactly ``nn.Linear``, whose ``weight`` is the whole map. A wrapper (a LoRA adapter
    layer from ``peft``) exposes its base weight as ``weight`` but adds to the output: the fast paths that read
    weights directly must then call the module instead, or the adapter would silently do nothing."""
    return type(module) is nn.Linear


def project(module: nn.Module, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
            bias: Optional[torch.Tensor] = None, gelu: bool = False) -> torch.Tensor:
    """``module(x)`` (then the exact GELU when ``gelu``), or ``F.linear`` on a view (``weight``, ``bias``) of a
    plain ``module``'s weight, with the active inference kernel (:mod:`.kernels`) where one applies: an inference
    call on a plain ``nn.Linear`` whose chosen kernel is not the reference. Everything else runs exactly as before
    the kernel choice existed: autograd, LoRA-wrapped layers and the reference kernel."""
    view = weight is not None
    if plain_linear(module) and chosen_kernel(x) != REFERENCE_KERNEL and not _autograd_path(
            x, module.weight.requires_grad):
        return linear(module, x, weight if view else module.weight, bias if view else module.bias, gelu)
    out = F.linear(x, weight, bias) if view else module(x)
    return F.gelu(out) if gelu else out


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's QuickGELU, ``x * sigmoid(1.702 x)``, used by the released ViT (not the exact GELU).

    Without autograd it runs in place on one temporary (same arithmetic, one allocation instead of two and no
    extra pass over memory): 2.8x faster in bf16 on CPU, where the out-of-place form is memory bound.
    """
    if _autograd_path(x):
        return x * torch.sigmoid(QUICK_GELU_SLOPE * x)
    out = x.mul(QUICK_GELU_SLOPE)
    out.sigmoid_()
    return out.mul_(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (output rows q|k|v, head-major).

    The fused layout is what the official ViT stores; the converter fuses ERNIE's separate q, k, v into it too,
    so both towers issue one GEMM for the projections and one ``scaled_dot_product_attention`` call.

    ``first_token_only=True`` computes the output of token 0 alone (queries from token 0, keys and values from
    every token): the last block of each tower only feeds the [CLS]/class token to the feature, so the other
    rows' query, attention, output-projection and MLP work is skipped. Row 0 is the same function either way,
    gradients included (the weight slices below are views that autograd differentiates like the whole).

    ``attention_dropout`` drops attention probabilities (inverted dropout, as Paddle's ``upscale_in_train``) in
    training mode only; in eval mode the call is exactly the inference call.

    When ``qkv`` is not a plain ``nn.Linear`` (a LoRA adapter wraps it), ``first_token_only`` calls it on every
    token and keeps row 0's queries: the weight slices would bypass the adapter.
    """

    def __init__(self, dim: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None,
                first_token_only: bool = False) -> torch.Tensor:
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        dropout_p = self.attention_dropout if self.training else 0.0
        if not first_token_only:
            qkv = project(self.qkv, x).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p)
            return project(self.out_proj, out.transpose(1, 2).reshape(batch, length, dim))
        if plain_linear(self.qkv):
            # Rows [0, dim) of the fused weight are q, rows [dim, 3 dim) are k|v: contiguous views, no copies.
            weight, bias = self.qkv.weight, self.qkv.bias
            q = project(self.qkv, x[:, 0], weight[:dim], bias[:dim])
            kv = project(self.qkv, x, weight[dim:], bias[dim:])
        else:
            qkv = project(self.qkv, x)
            q, kv = qkv[:, 0, :dim], qkv[..., dim:]
        q = q.reshape(batch, heads, 1, head_dim)
        k, v = kv.reshape(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p)  # [B, H, 1, hd]
        return project(self.out_proj, out.reshape(batch, 1, dim))


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``: exact GELU in ERNIE, QuickGELU in the ViT."""

    def __init__(self, dim: int, hidden: int, activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.activation is quick_gelu and plain_linear(self.fc1) and plain_linear(self.fc2)
                and not _autograd_path(x, self.fc1.weight.requires_grad)):
            if x.dtype != torch.float32:
                return self._half_quick_gelu(x)
            if folds_scales(x):
                return self._folded_quick_gelu(x)
        if self.activation is F.gelu:  # exact GELU: a kernel may apply it in place on fc1's fresh output
            return project(self.fc2, project(self.fc1, x, gelu=True))
        return project(self.fc2, self.activation(project(self.fc1, x)))

    def _folded_quick_gelu(self, x: torch.Tensor) -> torch.Tensor:
        """The QuickGELU MLP in fp32 under the oneDNN kernel: the same identity as :meth:`_half_quick_gelu`,
        ``h * sigmoid(s h) = silu(s h) / s``, with ``s`` folded into the reordered weights (``s W1``, ``W2 / s``)
        and SiLU in place on ``fc1``'s output: one pass over the [tokens, intermediate] activations instead of the
        three of :func:`quick_gelu` (the peers fuse this op too). Within 1e-5 of the reference; the reference kernel
        keeps the plain order of operations, bit for bit."""
        s = QUICK_GELU_SLOPE
        hidden = scaled_silu_linear(self.fc1, x, self.fc1.weight, self.fc1.bias, s, s, silu=True)
        return scaled_silu_linear(self.fc2, hidden, self.fc2.weight, self.fc2.bias, 1.0 / s, 1.0, silu=False)

    def _half_quick_gelu(self, x: torch.Tensor) -> torch.Tensor:
        """The QuickGELU MLP with its two scalings done by the GEMMs: ``h * sigmoid(s h) = silu(s h) / s``, so
        ``fc1`` computes ``s h`` (``addmm`` alpha = beta = s), ``silu`` runs in place, and ``fc2`` divides by ``s``
        (alpha = 1/s). Two passes over the [tokens, intermediate] activations fewer than :func:`quick_gelu`, and one
        rounding fewer. Inference in half precision only, where those passes cost about as much as the GEMMs
        (bf16 on AMX); fp32 keeps the reference's order of operations, training the plain autograd path, and
        LoRA-adapted ``fc1``/``fc2`` the module calls (this path reads the weights directly).
        """
        s = QUICK_GELU_SLOPE
        rows = x.reshape(-1, x.shape[-1])
        hidden = scaled_addmm(self.fc1.bias, rows, self.fc1.weight, beta=s, alpha=s)
        F.silu(hidden, inplace=True)
        out = scaled_addmm(self.fc2.bias, hidden, self.fc2.weight, beta=1.0, alpha=1.0 / s)
        return out.view(*x.shape[:-1], out.shape[-1])


def run_block(block: nn.Module, checkpointed: bool, *args: Any) -> torch.Tensor:
    """``block(*args)``, or the same under activation checkpointing when ``checkpointed`` and autograd is on.

    Checkpointing stores only the block's input and recomputes its activations during backward (non-reentrant
    ``torch.utils.checkpoint``, which replays the dropout masks: the gradients are those of the plain call).
    """
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
