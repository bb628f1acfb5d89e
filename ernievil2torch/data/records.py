"""JSON Lines, read line by line: the one ``.jsonl`` parser of the data layer (captions files of
:mod:`.caption_folder`, text listings of :mod:`.inputs`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union


def iter_jsonl(path: Union[str, Path]) -> Iterator[Tuple[int, Any, Optional[str]]]:
    """Yield ``(line_number, object, None)`` per non-blank line, or ``(line_number, None, reason)`` for a line
    that is not JSON, so each caller decides whether a bad line is skipped (embed) or fatal (eval)."""
    with open(path, encoding="utf-8") as handle:
        for num, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield num, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield num, None, f"bad JSON ({exc.msg})"
