"""The FLOPs the towers actually execute, counted from the config (2 per multiply-add, matrix products only).

The feature path of each tower (``VisionEncoder.encode``, ``TextEncoder.encode``) runs every block on every token
except the last block, which computes only the class/[CLS] row: its keys and values still come from every token
(one ``[L, D] x [D, 2D]`` product), but its query, attention, output projection and MLP work on one row. The counts
below follow that code, so "of ceiling" figures divide by work that is really done. Elementwise work (LayerNorm,
softmax, GELU, bias adds) is not counted: it is memory-bound and a few per cent of the total.

``tests/bench/test_benchmarks.py`` checks both counts against ``torch.utils.flop_counter.FlopCounterMode`` run over the
real model.
"""
from __future__ import annotations

from ernievil2torch.config import TextConfig, VisionConfig


def linear_flops(rows: int, fan_in: int, fan_out: int) -> int:
    """FLOPs of ``[rows, fan_in] @ [fan_in, fan_out]``."""
    return 2 * rows * fan_in * fan_out


def block_flops(length: int, dim: int, hidden: int, last: bool = False) -> int:
    """One transformer block over ``length`` tokens; ``last``: only row 0 is computed (keys/values from all)."""
    if not last:
        return (linear_flops(length, dim, 3 * dim)       # fused q|k|v
                + 2 * linear_flops(length, length, dim)  # q k^T and softmax(.) v, all heads together
                + linear_flops(length, dim, dim)         # output projection
                + linear_flops(length, dim, hidden) + linear_flops(length, hidden, dim))
    return (linear_flops(1, dim, dim) + linear_flops(length, dim, 2 * dim)  # q of row 0, k|v of every token
            + 2 * linear_flops(1, length, dim)
            + linear_flops(1, dim, dim)
            + linear_flops(1, dim, hidden) + linear_flops(1, hidden, dim))


def tower_blocks_flops(layers: int, length: int, dim: int, hidden: int) -> int:
    """``layers`` blocks, the last of them computing row 0 only."""
    full = block_flops(length, dim, hidden)
    return (layers - 1) * full + block_flops(length, dim, hidden, last=True)


def image_flops(cfg: VisionConfig) -> int:
    """Executed FLOPs per image: patch convolution (no bias) plus the blocks over 1 + patches tokens."""
    patch = linear_flops(cfg.num_patches, cfg.num_channels * cfg.patch_size ** 2, cfg.hidden_size)
    return patch + tower_blocks_flops(cfg.num_layers, cfg.num_positions, cfg.hidden_size, cfg.intermediate_size)


def text_flops(cfg: TextConfig, length: int) -> int:
    """Executed FLOPs per text of ``length`` tokens (no padding): the blocks plus the tanh pooler on [CLS]."""
    return (tower_blocks_flops(cfg.num_layers, length, cfg.hidden_size, cfg.intermediate_size)
            + linear_flops(1, cfg.hidden_size, cfg.hidden_size))
