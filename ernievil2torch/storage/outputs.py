"""The one check of an output path, made before any work by every command that writes or replaces one.

* :func:`check_output_dir` / :func:`check_output_file`: refuse an output that could destroy what the user did not
  ask to replace: an empty path, ``.``, the current directory or any folder above it, the filesystem root, one of the
  command's inputs or a folder holding one; an existing output without ``overwrite``; a file where a folder is
  expected and the other way round; a file output whose folder does not exist.
* :func:`refuse_existing`: the one "already exists; pass --overwrite" refusal.

Every refusal is an :class:`~ernievil2torch.errors.OutputExistsError` (an existing output) or an
:class:`~ernievil2torch.errors.InputError` (an output path that may not be used at all) naming the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

from ..errors import InputError, OutputExistsError

PathLike = Union[str, Path]


def refuse_existing(path: PathLike, overwrite: bool, also: str = "") -> None:
    """Raise :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is false (``also``: another way out,
    e.g. ``" or --resume to continue the run in it"``)."""
    if not overwrite and Path(path).exists():
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it{also}")


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_output_path(path: PathLike, inputs: Iterable[Optional[PathLike]] = ()) -> Path:
    """Refuse an output path that may never be replaced; return it resolved.

    Refused (:class:`InputError`, naming the reason): an empty path, the current directory (``.``, or any spelling
    of it) or a folder above it, the filesystem root, and an input (each of ``inputs``, ``None`` skipped) or a folder
    that holds one.
    """
    text = str(path) if path is not None else ""
    if not text.strip():
        raise InputError("the output path is empty; name a file or folder to write")
    target = _resolved(path)
    if target == Path(target.anchor):
        raise InputError(f"output {text!r} is the filesystem root; name a new file or folder to write")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise InputError(f"output {text!r} is the current directory or a folder above it; name a new file or "
                         "folder to write")
    for source in inputs:
        if source is None or not str(source):
            continue
        source_path = _resolved(source)
        if target == source_path:
            raise InputError(f"output {text!r} is the input {str(source)!r}; write to another path")
        if target in source_path.parents:
            raise InputError(f"output {text!r} holds the input {str(source)!r}; write to another path")
    return target


def check_output_dir(path: PathLike, overwrite: bool = False, inputs: Iterable[Optional[PathLike]] = (),
                     also: str = "") -> Path:
    """Check a folder a command will create or replace (see :func:`check_output_path`); an existing ``path`` is
    refused unless ``overwrite`` (and when it is a file). Returns ``path`` resolved."""
    target = check_output_path(path, inputs)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory")
    refuse_existing(path, overwrite, also)
    return target


def check_output_file(path: PathLike, overwrite: bool = True, inputs: Iterable[Optional[PathLike]] = ()) -> Path:
    """Check a file a command will write (see :func:`check_output_path`): its folder must exist, ``path`` must not be
    a folder, and an existing file is refused unless ``overwrite``. Returns ``path`` resolved."""
    target = check_output_path(path, inputs)
    if target.is_dir():
        raise OutputExistsError(f"{path} is a directory; give the file to write")
    if not target.parent.is_dir():
        raise InputError(f"the folder of output {path} does not exist ({Path(path).parent}); create it first")
    refuse_existing(path, overwrite)
    return target
