"""Every picture the project draws shows Chinese with a real font (no missing glyphs, no code-point escapes)."""
from __future__ import annotations

import warnings

import numpy as np

from helpers import require_module

require_module("matplotlib")

from ernievil2torch.apps import plotting  # noqa: E402

CAPTIONS = ["一张猫的照片", "一只在草地上奔跑的狗", "赛博朋克风格的城市夜景"]


def _glyph_warnings(caught):
    return [str(w.message) for w in caught if "missing from font" in str(w.message) or "Glyph" in str(w.message)]


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]


def test_the_pip_font_package_provides_noto_sans_sc():
    path = plotting.cjk_font_file()
    assert path is not None and path.name == "NotoSansSC-Regular.otf", "pip install -r requirements-dev.txt"
    assert plotting.find_cjk_font() == "Noto Sans SC"


def test_similarity_heatmap_draws_chinese_captions(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, has_cjk = plotting.plot_similarity(np.random.default_rng(1).random((3, 2)), _images(), CAPTIONS,
                                                 str(tmp_path / "sim.png"))
    assert has_cjk and not _glyph_warnings(caught), _glyph_warnings(caught)
    assert path.stat().st_size > 10_000


def test_tile_rows_draw_chinese_titles_labels_and_captions(tmp_path):
    rows = [[plotting.Tile(image, f"相册/照片{i}.jpg\n余弦 0.99{i}", f"row {i}") for i, image in enumerate(_images())],
            [plotting.Tile(None, "无法读取的图片", "unreadable")]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, has_cjk = plotting.plot_tile_rows(rows, str(tmp_path / "tiles.png"), "近重复图像组（余弦相似度 ≥ 0.95）",
                                                "near-duplicate groups", ["第 1 组", "第 2 组"], ["g1", "g2"])
    assert has_cjk and not _glyph_warnings(caught), _glyph_warnings(caught)
    assert path.is_file()


def test_without_any_cjk_font_the_pictures_fall_back_to_ascii_labels(tmp_path, monkeypatch):
    """No pip font and no system font: ASCII labels (T1..Tn, plain captions), never escapes or empty boxes."""
    import matplotlib.text

    monkeypatch.setattr(plotting, "cjk_font_file", lambda: None)
    monkeypatch.setattr(plotting, "CJK_FONT_NAMES", ())
    drawn = []
    original = matplotlib.text.Text.set_text

    def record(self, text):
        drawn.append(str(text))
        return original(self, text)

    monkeypatch.setattr(matplotlib.text.Text, "set_text", record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, has_cjk = plotting.plot_similarity([[0.1, 0.2]] * 3, _images(), CAPTIONS, str(tmp_path / "a.png"))
        rows = [[plotting.Tile(_images()[0], "照片\n余弦 0.99", "row 3\ncos 0.99")]]
        _, has_cjk_tiles = plotting.plot_tile_rows(rows, str(tmp_path / "b.png"), "近重复图像组", "near-duplicate groups",
                                                   ["第 1 组"], ["group 1"])
    assert not has_cjk and not has_cjk_tiles
    assert not _glyph_warnings(caught), _glyph_warnings(caught)
    assert "T1" in drawn and "row 3\ncos 0.99" in drawn and "cosine similarity" in drawn
    assert all(text.isascii() and "\\u" not in text for text in drawn), [t for t in drawn if not t.isascii()]
