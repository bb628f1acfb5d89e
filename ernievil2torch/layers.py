"""Building blocks shared by both towers: fused-qkv self-attention and the two-layer MLP."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's QuickGELU, ``x * sigmoid(1.702 x)``, used by the released ViT (not the exact GELU)."""
    return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (output rows q|k|v, head-major).

    The fused layout is what the official ViT stores; the converter fuses ERNIE's separate q, k, v into it too,
    so both towers issue one GEMM for the projections and one ``scaled_dot_product_attention`` call.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``: exact GELU in ERNIE, QuickGELU in the ViT."""

    def __init__(self, dim: int, hidden: int, activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))
