"""ERNIE 3.0 Base text tower: word + position embeddings, post-norm blocks, tanh pooler over [CLS]."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextConfig
from .layers import MLP, SelfAttention, attention_bias, run_block


class TextEmbeddings(nn.Module):
    """Word and absolute position embeddings, then LayerNorm and (training only) dropout; no token-type or task
    embedding."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"text of {length} tokens exceeds the model's "
                             f"{self.position_embeddings.num_embeddings} positions")
        positions = self.position_embeddings.weight[:length]
        return self.dropout(self.norm(self.word_embeddings(input_ids) + positions))


class TextBlock(nn.Module):
    """Post-norm transformer block: ``h = LN1(x + drop(Attn(x))); out = LN2(h + drop(MLP(h)))``.

    The dropout sites are the official ones (``hidden_dropout`` on both branch outputs before the residual add,
    ``attention_dropout`` on the attention probabilities, none inside the MLP); they act in training mode only.
    """

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, F.gelu)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor],
                first_token_only: bool = False) -> torch.Tensor:
        """``first_token_only``: return only the [CLS] row's output [B, 1, D] (what the last block feeds on)."""
        if first_token_only:
            x = self.norm1(x[:, :1] + self.dropout(self.attn(x, attn_bias, first_token_only=True)))
        else:
            x = self.norm1(x + self.dropout(self.attn(x, attn_bias)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class TextEncoder(nn.Module):
    """Token ids [B, L] -> 768-d text feature ``tanh(pooler(h[:, 0]))`` (no projection head).

    :meth:`encode` is the feature path: pure tensor work that eager runs, :meth:`compile` and the ONNX export all
    share. :meth:`forward` adds the host-side decisions around it (checks, trimming batch-wide trailing padding,
    no mask when nothing is padded), which would otherwise put data-dependent breaks into a compiled graph.
    """

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.layers = nn.ModuleList(TextBlock(cfg) for _ in range(cfg.num_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        #: Recompute each block's activations in backward instead of storing them (see ``run_block``).
        self.gradient_checkpointing = False

    def keep_mask(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[B, L]`` bool, True on real tokens: ``attention_mask`` when given, else ``input_ids != pad id``."""
        if attention_mask is None:
            return input_ids != self.config.pad_token_id
        return attention_mask.to(device=input_ids.device, dtype=torch.bool)

    def padding_bias(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                     dtype: torch.dtype) -> Optional[torch.Tensor]:
        """:func:`attention_bias` of the batch, or None when nothing is padded (SDPA then picks its fastest kernel).

        The "nothing padded" test reads the mask on the host; that is free on CPU but a device sync on an
        accelerator, so there the bias is always built (SDPA's memory-efficient kernels take it at no real cost).
        """
        keep = self.keep_mask(input_ids, attention_mask)
        if keep.device.type == "cpu" and bool(keep.all()):
            return None
        return attention_bias(keep, dtype)

    def _trim_padding(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]):
        """Drop trailing columns that are padding in every row (CPU only: it reads the mask on the host).

        A key masked with -10000 gets softmax weight exp(-10000 - max) == 0.0 exactly, so those columns change
        nothing for the other tokens; dropping them makes the result independent of how far a batch is padded
        and saves their work. Position ids stay 0..L'-1 because only trailing columns go.
        """
        if input_ids.device.type != "cpu":
            return input_ids, attention_mask
        keep = self.keep_mask(input_ids, attention_mask)
        used = keep.any(0).nonzero()
        length = max(int(used[-1]) + 1, 1) if used.numel() else 1
        if length == input_ids.shape[1]:
            return input_ids, attention_mask
        return input_ids[:, :length], None if attention_mask is None else attention_mask[:, :length]

    def forward_tokens(self, input_ids: torch.Tensor, attn_bias: Optional[torch.Tensor] = None,
                       first_token_only: bool = False) -> torch.Tensor:
        """Token states after the last block: [B, L, hidden], or [B, 1, hidden] (the [CLS] row alone, computed
        alone in the last block) with ``first_token_only``. ``attn_bias`` comes from :func:`attention_bias`;
        None attends to every token."""
        x = self.embeddings(input_ids)
        last = len(self.layers) - 1
        for index, block in enumerate(self.layers):
            x = run_block(block, self.gradient_checkpointing, x, attn_bias, first_token_only and index == last)
        return x

    def encode(self, input_ids: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The feature path: ``tanh(pooler(h[:, 0]))`` [B, hidden]; only [CLS] reaches the feature, so the last
        block computes that row alone."""
        return torch.tanh(self.pooler(self.forward_tokens(input_ids, attn_bias, first_token_only=True)[:, 0]))

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Text features [B, hidden]; the mask defaults to ``input_ids != pad id``. Raises ``ValueError`` for ids
        that are not [batch, length >= 1] or longer than the learned positions."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: a text needs at least its [CLS] token")
        input_ids, attention_mask = self._trim_padding(input_ids, attention_mask)
        return self.encode(input_ids, self.padding_bias(input_ids, attention_mask, self.pooler.weight.dtype))

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` :meth:`encode` (the host-side mask handling of :meth:`forward` stays eager)."""
        self.encode = torch.compile(self.encode, *args, **kwargs)
