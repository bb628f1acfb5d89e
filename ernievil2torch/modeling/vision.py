"""CLIP-style ViT-B/16 image tower: patch conv (no bias), class token, ln_pre, pre-norm blocks, ln_post."""
from __future__ import annotations

import torch
from torch import nn

from ..config import VisionConfig
from .layers import MLP, SelfAttention, quick_gelu, run_block


class VisionBlock(nn.Module):
    """Pre-norm transformer block: ``x += drop(Attn(LN1(x))); x += drop(MLP(LN2(x)))`` with QuickGELU.

    The released ViT has no dropout (both probabilities default to 0, so ``drop`` is the identity); a fine-tuning
    config may set ``hidden_dropout`` (branch outputs) and ``attention_dropout`` (attention probabilities).
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, quick_gelu)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, first_token_only: bool = False) -> torch.Tensor:
        """``first_token_only``: return only the class token's output [B, 1, D] (what the last block feeds on)."""
        if first_token_only:
            x = x[:, :1] + self.dropout(self.attn(self.norm1(x), first_token_only=True))
        else:
            x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class VisionEncoder(nn.Module):
    """Pixels [B, 3, 224, 224] -> 768-d image feature ``norm_post(x)[:, 0]`` (no projection head)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.config = cfg
        self.patch_embed = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size,
                                     stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.num_positions, cfg.hidden_size))
        self.norm_pre = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.num_layers))
        self.norm_post = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        #: Recompute each block's activations in backward instead of storing them (see ``run_block``).
        self.gradient_checkpointing = False

    def forward_tokens(self, pixel_values: torch.Tensor, first_token_only: bool = False) -> torch.Tensor:
        """Token states [B, 1 + patches, hidden] before norm_post ([B, 1, hidden], the class row computed alone in
        the last block, with ``first_token_only``). Pixels are cast to the weights' dtype."""
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.norm_pre(x)
        last = len(self.layers) - 1
        for index, block in enumerate(self.layers):
            x = run_block(block, self.gradient_checkpointing, x, first_token_only and index == last)
        return x

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The feature path: ``norm_post`` of the class token [B, hidden]; only that row reaches the feature, so
        the last block computes it alone. Eager runs, :meth:`compile` and the ONNX export share it."""
        return self.norm_post(self.forward_tokens(pixel_values, first_token_only=True)[:, 0])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image features [B, hidden] of normalised pixels [B, 3, S, S]; ``ValueError`` for any other shape."""
        cfg = self.config
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (cfg.num_channels, cfg.image_size,
                                                                         cfg.image_size):
            raise ValueError(f"pixel_values must be [batch, {cfg.num_channels}, {cfg.image_size}, "
                             f"{cfg.image_size}], got {tuple(pixel_values.shape)}")
        return self.encode(pixel_values)

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` :meth:`encode` (the shape check of :meth:`forward` stays eager)."""
        self.encode = torch.compile(self.encode, *args, **kwargs)
