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

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor],
                first_token_only: bool = False) -> torch.Tensor:
        """``first_token_only``: return only the [CLS] row's output [B, 1, D] (what the last block feeds on)."""
        if first_token_only:
            x = self.norm1(x[:, :1] + self.attn(x, attn_bias, first_query_only=True))
        else:
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
        """Additive key mask [B, 1, 1, L]; None when nothing is padded (lets SDPA pick its fastest kernel).

        The "nothing padded" test reads the mask on the host; that is free on CPU but a device sync on an
        accelerator, so there the bias is always built (SDPA's memory-efficient kernels take it at no real cost).
        """
        keep = self._keep_mask(input_ids, attention_mask)
        if keep.device.type == "cpu" and bool(keep.all()):
            return None
        bias = torch.zeros(keep.shape, dtype=dtype, device=input_ids.device)
        bias.masked_fill_(~keep, MASK_BIAS)
        return bias[:, None, None, :]

    def _keep_mask(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if attention_mask is None:
            return input_ids != self.config.pad_token_id
        return attention_mask.to(device=input_ids.device, dtype=torch.bool)

    def _trim_padding(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]):
        """Drop trailing columns that are padding in every row (CPU only: it reads the mask on the host).

        A key masked with -10000 gets softmax weight exp(-10000 - max) == 0.0 exactly, so those columns change
        nothing for the other tokens; dropping them makes the result independent of how far a batch is padded
        and saves their work. Position ids stay 0..L'-1 because only trailing columns go.
        """
        if input_ids.device.type != "cpu":
            return input_ids, attention_mask
        keep = self._keep_mask(input_ids, attention_mask)
        used = keep.any(0).nonzero()
        length = max(int(used[-1]) + 1, 1) if used.numel() else 1
        if length == input_ids.shape[1]:
            return input_ids, attention_mask
        return input_ids[:, :length], None if attention_mask is None else attention_mask[:, :length]

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                       cls_only: bool = False) -> torch.Tensor:
        """All token states [B, L, hidden] after the last block ([B, 1, hidden] with ``cls_only``)."""
        x = self.embeddings(input_ids)
        bias = self.attention_bias(input_ids, attention_mask, x.dtype)
        last = len(self.layers) - 1
        for index, block in enumerate(self.layers):
            x = block(x, bias, first_token_only=cls_only and index == last)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: a text needs at least its [CLS] token")
        # Host-side decisions (trim batch-wide trailing padding, bias or no bias) stay outside `_encode`,
        # the part that `compile()` hands to torch.compile, so the compiled graph has no data-dependent breaks.
        input_ids, attention_mask = self._trim_padding(input_ids, attention_mask)
        bias = self.attention_bias(input_ids, attention_mask, self.pooler.weight.dtype)
        return self._encode(input_ids, bias)

    def _encode(self, input_ids: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.embeddings(input_ids)
        last = len(self.layers) - 1
        for index, block in enumerate(self.layers):
            # Only [CLS] reaches the feature: the last block computes that row alone.
            x = block(x, bias, first_token_only=index == last)
        return torch.tanh(self.pooler(x[:, 0]))

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the tensor work of :meth:`forward` (mask handling stays eager)."""
        self._encode = torch.compile(self._encode, *args, **kwargs)
