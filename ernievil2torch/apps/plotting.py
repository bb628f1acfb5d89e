"""The project's pictures: similarity heatmaps and near-duplicate groups (matplotlib, imported only when drawing).

Chinese text is drawn with a real CJK font on a fresh machine: the Noto Sans SC file shipped by the pip package
``pylopdf-fonts-zh-cn`` (OFL-1.1, in the ``[plot]`` extra and the dev requirements) when it is installed, else a
CJK font the system already has. Only when neither exists does a picture fall back to ASCII labels (``T1..Tn``,
row numbers) that the command's printed output explains; it never shows code-point escapes or empty boxes.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..storage.atomic import atomic_file
from .fonts import cjk_font_file

#: System font families that draw Simplified Chinese, tried in order when the pip package is absent.
CJK_FONT_NAMES = ("Noto Sans SC", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                  "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN")


def find_cjk_font() -> Optional[str]:
    """A matplotlib font family that draws Chinese: the pip package's font (registered here), else the first
    installed system family of :data:`CJK_FONT_NAMES`; None when there is none."""
    from matplotlib import font_manager

    path = cjk_font_file()
    if path is not None:
        return _register_font(str(path))
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONT_NAMES if name in installed), None)


@functools.lru_cache(maxsize=None)
def _register_font(path: str) -> str:
    """Add a font file to matplotlib's font list (once) and return its family name."""
    from matplotlib import font_manager

    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


@contextlib.contextmanager
def _pyplot(font: Optional[str]) -> Iterator[object]:
    """``matplotlib.pyplot`` on the Agg backend, with ``font`` first in the sans-serif list for this figure only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = {"font.family": "sans-serif", "axes.unicode_minus": True}
    if font:
        settings["font.sans-serif"] = [font] + [f for f in plt.rcParams["font.sans-serif"] if f != font]
    with plt.rc_context(settings):
        yield plt


def _save(fig, plt, path: str) -> Path:
    """Save ``fig`` atomically (the format follows the suffix, PNG by default) and close it."""
    out = Path(path)
    try:
        with atomic_file(out) as handle:
            fig.savefig(handle, format=out.suffix[1:].lower() or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def plot_similarity(similarity: Sequence[Sequence[float]], images: Sequence[np.ndarray], texts: List[str],
                    path: str, title: str = "余弦相似度 cosine similarity") -> Tuple[Path, bool]:
    """Draw a texts x images heatmap with thumbnails (HxWx3 uint8 arrays) above the columns and captions beside the
    rows.

    Returns the written path and whether a CJK font was found. Without one the rows are labelled ``T1..Tn`` (the
    order of the printed matrix) and the title is the English part, so nothing renders as boxes.
    """
    matrix = np.asarray(similarity, dtype=float)
    font = find_cjk_font()
    labels = texts if font else [f"T{i + 1}" for i in range(len(texts))]
    with _pyplot(font) as plt:
        rows, cols = matrix.shape
        fig = plt.figure(figsize=(2 + 1.6 * cols, 2.2 + 0.6 * rows))
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
        fig.suptitle(title if font else _ascii_part(title))
        return _save(fig, plt, path), font is not None


@dataclass
class Tile:
    """One thumbnail of a picture grid: an HxWx3 uint8 image (None: unreadable, drawn as an empty frame), its
    caption, and an ASCII caption used when no CJK font exists."""

    image: Optional[np.ndarray]
    caption: str
    plain_caption: str


def plot_tile_rows(rows: Sequence[Sequence[Tile]], path: str, title: str, plain_title: str,
                   row_labels: Sequence[str] = (), plain_row_labels: Sequence[str] = ()) -> Tuple[Path, bool]:
    """Draw rows of captioned thumbnails (one row per group), e.g. the near-duplicate groups of ``dedup``.

    Returns the written path and whether a CJK font was found (without one the plain captions, title and row
    labels are used).
    """
    font = find_cjk_font()
    labels = row_labels if font else plain_row_labels
    n_rows = max(1, len(rows))
    n_cols = max([len(r) for r in rows] + [1])
    with _pyplot(font) as plt:
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.4 + 2.0 * n_cols, 0.6 + 2.3 * n_rows), squeeze=False)
        for r in range(n_rows):
            for c in range(n_cols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                tile = rows[r][c] if r < len(rows) and c < len(rows[r]) else None
                if tile is None:
                    ax.axis("off")
                    continue
                if tile.image is not None:
                    ax.imshow(np.asarray(tile.image))
                ax.set_xlabel(tile.caption if font else tile.plain_caption, fontsize=8)
                if c == 0 and r < len(labels):
                    ax.set_ylabel(labels[r], fontsize=9)
        fig.suptitle(title if font else plain_title)
        fig.tight_layout()
        return _save(fig, plt, path), font is not None


def _ascii_part(text: str) -> str:
    """The ASCII words of a bilingual title (``"余弦相似度 cosine similarity"`` -> ``"cosine similarity"``)."""
    kept = " ".join(word for word in text.split() if word.isascii())
    return kept or "figure"
