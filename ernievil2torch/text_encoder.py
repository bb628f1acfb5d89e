"""ERNIE 3.0 Base text tower: word + position embeddings, post-norm blocks, tanh pooler over [CLS]."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig
from .layers import MLP, SelfAttention

# Paddle's ERNIE adds -10000 (not -inf) to masked keys; we keep the same constant so padded batches match.
MASK_BIAS = -10000.0


class TextEmbeddings(nn.Module):
    """Word and absolute position embeddings, then LayerNorm (no token-type or task embedding)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"text of {length} tokens exceeds the model's "
                             f"{self.position_embeddings.num_embeddings} positions")
        positions = self.position_embeddings.weight[:length]
        return self.norm(self.word_embeddings(input_ids) + positions)


class TextBlock(nn.Module):
    """Post-norm transformer block: ``h = LN1(x + Attn(x)); out = LN2(h + MLP(h))``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, F.gelu)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, attn_bias))
        return self.norm2(x + self.mlp(x))


class TextEncoder(nn.Module):
    """Token ids -> 768-d text feature ``tanh(pooler(h[:, 0]))`` (no projection head)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.layers = nn.ModuleList(TextBlock(cfg) for _ in range(cfg.num_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def attention_bias(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                       dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Additive key mask [B, 1, 1, L]; None when nothing is padded (lets SDPA pick its fastest kernel)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        keep = attention_mask.to(torch.bool)
        if bool(keep.all()):
            return None
        bias = torch.zeros(keep.shape, dtype=dtype, device=input_ids.device)
        bias.masked_fill_(~keep, MASK_BIAS)
        return bias[:, None, None, :]

    def forward_tokens(self, input_ids: torch.Tensor,
                       attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """All token states [B, L, hidden] after the last block."""
        x = self.embeddings(input_ids)
        bias = self.attention_bias(input_ids, attention_mask, x.dtype)
        for block in self.layers:
            x = block(x, bias)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: a text needs at least its [CLS] token")
        hidden = self.forward_tokens(input_ids, attention_mask)
        return torch.tanh(self.pooler(hidden[:, 0]))
