"""Small JSON files the project writes next to its outputs (``run.json``, an embed output's ``manifest.json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import InputError


def read_json_object(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``; ``None`` when there is no such file. :class:`InputError` naming the file when it
    is not UTF-8 JSON, or holds another JSON value than an object (damaged, or not written by this package)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value
