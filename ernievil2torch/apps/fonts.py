"""The Chinese font the project draws and serves with: Noto Sans SC from the pip package ``pylopdf-fonts-zh-cn``
(OFL-1.1), so pictures and the search page show Chinese on a machine without a CJK system font."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

#: The pip package that ships a Simplified-Chinese font (Noto Sans SC).
CJK_FONT_PACKAGE = "pylopdf-fonts-zh-cn"


def cjk_font_file() -> Optional[Path]:
    """The Noto Sans SC file of the ``pylopdf-fonts-zh-cn`` package, or None when it is not installed."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        return None
    path = Path(pylopdf_fonts_zh_cn.sans_path())
    return path if path.is_file() else None
