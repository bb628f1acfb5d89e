"""Similarity heatmaps with image thumbnails and captions (matplotlib, imported only when a plot is asked for)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..storage.atomic import atomic_file

CJK_FONT_NAMES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                  "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN")


def find_cjk_font() -> Optional[str]:
    """The first installed font family that can draw Chinese, or None."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONT_NAMES if name in installed), None)


def plot_similarity(similarity: Sequence[Sequence[float]], images: Sequence[np.ndarray], texts: List[str],
                    path: str, title: str = "cosine similarity") -> Tuple[Path, bool]:
    """Draw a texts x images heatmap with thumbnails (HxWx3 uint8 arrays) above the columns and captions beside the
    rows.

    Returns the written path and whether a CJK font was found. Without one the rows are labelled ``T1..Tn`` and
    the captions are listed (as ``\\u`` escapes are unreadable) in the figure's footer, so nothing renders as boxes.
    The file is written atomically (the format follows the suffix, PNG by default).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(similarity, dtype=float)
    font = find_cjk_font()
    if font:
        plt.rcParams["font.sans-serif"] = [font] + list(plt.rcParams["font.sans-serif"])
    labels = texts if font else [f"T{i + 1}" for i in range(len(texts))]
    rows, cols = matrix.shape
    fig = plt.figure(figsize=(2 + 1.6 * cols, 2.2 + 0.6 * rows + (0 if font else 0.3 * rows)))
    grid = fig.add_gridspec(2, cols, height_ratios=[1.4, max(1.0, 0.45 * rows)], hspace=0.05)
    for col, image in enumerate(images):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(np.asarray(image))
        ax.axis("off")
    heat = fig.add_subplot(grid[1, :])
    shown = heat.imshow(matrix, cmap="viridis", aspect="auto")
    for (r, c), value in np.ndenumerate(matrix):
        heat.text(c, r, f"{value:.3f}", ha="center", va="center", color="white", fontsize=9)
    heat.set_xticks(range(cols), [f"image {c + 1}" for c in range(cols)])
    heat.set_yticks(range(rows), labels)
    fig.colorbar(shown, ax=heat, fraction=0.03)
    fig.suptitle(title)
    if not font:
        footer = "no CJK font found; " + "; ".join(f"T{i + 1} = {t}".encode("ascii", "backslashreplace").decode()
                                                   for i, t in enumerate(texts))
        fig.text(0.01, 0.01, footer, fontsize=7, wrap=True)
    out = Path(path)
    try:
        with atomic_file(out) as handle:
            fig.savefig(handle, format=out.suffix[1:].lower() or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out, font is not None
