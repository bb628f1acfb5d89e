"""``run.json``: the settings an output folder was started with, so that a later run continues it only when they match.

A resumable command (``embed``, ``finetune``) declares which of its settings decide the result, writes them with
:func:`write_run_record` when it starts a folder, and on a later run compares a fresh record with the stored one
(:func:`check_run_record`). Any difference is refused with an :class:`~ernievil2torch.errors.InputError` naming every
differing setting (stored value -> new value) and how to start over, because continuing would mix two runs.

The file is a JSON object, indented, written atomically (a reader sees the previous record or the complete new
one). Values are compared as JSON gives them back, so a tuple and a list, or ``5`` and ``5.0``, are the same setting.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..constants import RUN_SETTINGS_NAME
from ..errors import InputError
from .atomic import atomic_write_bytes
from .json_files import read_json_object

PathLike = Union[str, Path]


def run_record_path(folder: PathLike) -> Path:
    """Where a folder's record lives: ``FOLDER/run.json``."""
    return Path(folder) / RUN_SETTINGS_NAME


def _as_json(settings: Mapping[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(dict(settings)))


def write_run_record(folder: PathLike, settings: Mapping[str, Any]) -> Path:
    """Write ``settings`` (JSON-serialisable values) to ``FOLDER/run.json`` atomically; returns the file's path."""
    path = run_record_path(folder)
    atomic_write_bytes(path, (json.dumps(dict(settings), indent=2) + "\n").encode("utf-8"))
    return path


def read_run_record(folder: PathLike) -> Optional[Dict[str, Any]]:
    """The stored settings of ``FOLDER``, or ``None`` when it has no record. :class:`InputError` when the file is not
    a JSON object (damaged, or not written by this package)."""
    return read_json_object(run_record_path(folder))


def differing_settings(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(name, stored value, fresh value)`` for every setting whose values differ, sorted by name; a setting
    present on one side only differs too (its missing value shows as ``None``)."""
    fresh = _as_json(fresh)
    names = sorted(set(stored) | set(fresh))
    return [(name, stored.get(name), fresh.get(name)) for name in names if stored.get(name) != fresh.get(name)]


def check_run_record(folder: PathLike, fresh: Mapping[str, Any], start_over: str) -> None:
    """Refuse to continue ``FOLDER`` unless its stored record equals ``fresh``.

    Nothing happens when the folder has no record (nothing to compare with). Otherwise every differing setting is
    named in one :class:`InputError`, followed by ``start_over``: the caller's advice on how to start again (for
    example "use another --out or pass --overwrite").
    """
    stored = read_run_record(folder)
    if stored is None:
        return
    changed = differing_settings(stored, fresh)
    if changed:
        shown = ", ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changed)
        raise InputError(f"{Path(folder)} holds a different run (settings that differ: {shown}); continuing it "
                         f"would mix two runs: {start_over}")
