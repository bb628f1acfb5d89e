"""Constraints on one command-line value, checked after parsing and before the command does any work.

A :class:`Check` takes the parsed value (never ``None``: an absent optional value is not checked) and returns it,
possibly normalised (a dtype spelling becomes its canonical name), or raises :class:`~ernievil2torch.errors.InputError`
with a message that completes "--flag ...". Its ``rule`` is the same constraint in words, shown by ``--help``.
Commands declare theirs in a table next to the command (:mod:`ernievil2torch.cli.commands`).
"""
from __future__ import annotations

import glob
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import canonical_dtype, list_models, parse_hub_id
from ..constants import DTYPE_ALIASES, KEEP_DTYPE, MAX_TEXT_POSITIONS
from ..errors import InputError


@dataclass(frozen=True)
class Check:
    """One constraint: ``rule`` in words (for ``--help``), ``apply`` returns the (normalised) value or raises."""

    rule: str
    apply: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.apply(item) for item in value]
        return self.apply(value)


def _number_between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    def words() -> str:
        if math.isinf(high):
            return f"{'>' if low_open else '>='} {low:g}"
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    rule = words()

    def apply(value: Any) -> Any:
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if isinstance(value, float) and math.isnan(value) or too_low or too_high:
            raise InputError(f"must be {rule}, not {value!r}")
        return value

    return Check(rule, apply)


def between(low: float, high: float) -> Check:
    """``low <= value <= high``."""
    return _number_between(low, high)


POSITIVE = _number_between(0, math.inf, low_open=True)
NON_NEGATIVE = _number_between(0, math.inf)
#: A fraction such as an Adam beta: 0 <= value < 1.
FRACTION = _number_between(0, 1, high_open=True)
#: A cosine similarity.
COSINE = between(-1, 1)
PORT = between(0, 65535)
#: Token length including [CLS] and [SEP]: at least one piece, at most the text positions of the model.
MAX_LENGTH = between(3, MAX_TEXT_POSITIONS)


def one_of(*choices: str) -> Check:
    """The value is one of ``choices`` (case-sensitive, as the library compares them)."""
    def apply(value: Any) -> Any:
        if value not in choices:
            raise InputError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return Check(f"one of {', '.join(choices)}", apply)


def one_of_any_case(*choices: str) -> Check:
    """The value is one of ``choices`` in any case; it becomes the choice's own spelling."""
    by_lower = {choice.lower(): choice for choice in choices}

    def apply(value: Any) -> Any:
        found = by_lower.get(str(value).lower())
        if found is None:
            raise InputError(f"must be one of {', '.join(choices)}, not {value!r}")
        return found

    return Check(f"one of {', '.join(choices)} (any case)", apply)


def _dtype(value: Any) -> str:
    return canonical_dtype(value)


def _dtype_or_keep(value: Any) -> str:
    return canonical_dtype(value, allow_keep=True)


def _dtype_words(extra: tuple = ()) -> str:
    """The spellings of :data:`~ernievil2torch.constants.DTYPE_ALIASES`, grouped by dtype: ``float32/fp32, ...``."""
    groups: dict = {}
    for alias, canonical in DTYPE_ALIASES.items():
        groups.setdefault(canonical, [canonical])
        if alias != canonical:
            groups[canonical].append(alias)
    words = ["/".join(names) for names in groups.values()] + list(extra)
    return f"{', '.join(words[:-1])} or {words[-1]}"


DTYPE = Check(_dtype_words(), _dtype)
DTYPE_OR_KEEP = Check(_dtype_words((KEEP_DTYPE,)), _dtype_or_keep)


def _existing(kind: str, test: Callable[[Path], bool], refusal: str) -> Check:
    def apply(value: Any) -> Any:
        if not test(Path(value)):
            raise InputError(refusal.format(value=value))
        return value

    return Check(f"an existing {kind}", apply)


def _file(value: Any) -> Any:
    path = Path(value)
    if path.is_dir():
        raise InputError(f"{value} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"{value}: no such file")
    return value


#: An existing file; a folder given for it is named as such.
FILE = Check("an existing file", _file)
FOLDER = _existing("folder", Path.is_dir, "{value} is not a folder")
FILE_OR_FOLDER = _existing("file or folder", Path.exists, "{value}: no such file or folder")


def _path_or_pattern(value: Any) -> Any:
    if Path(value).exists() or (glob.has_magic(str(value)) and glob.glob(str(value), recursive=True)):
        return value
    raise InputError(f"{value}: no such file or folder, and no file matches it as a pattern")


#: An existing path or a glob pattern that matches at least one file.
PATH_OR_PATTERN = Check("an existing file or folder, or a glob that matches files", _path_or_pattern)



def _new_file(value: Any) -> Any:
    path = Path(value)
    if path.is_dir():
        raise InputError(f"{value} is a directory, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{value}: its folder {parent} does not exist" if not parent.exists()
                         else f"{value}: {parent} is not a folder")
    return value


def _folder_or_absent(value: Any) -> Any:
    if Path(value).exists() and not Path(value).is_dir():
        raise InputError(f"{value} is not a folder")
    return value


#: A file to write: not a folder, in a folder that exists.
NEW_FILE = Check("a file to write, in an existing folder", _new_file)
#: A folder, existing or to be made.
FOLDER_OR_ABSENT = Check("a folder (made if absent)", _folder_or_absent)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def needs_extra(check: Check, modules: tuple, extra: str) -> Check:
    """``check``, and then the optional ``modules`` must be installed (else name the pip ``extra`` that installs
    them)."""
    def apply(value: Any) -> Any:
        value = check.apply(value)
        missing = [name for name in modules if not installed(name)]
        if missing:
            raise InputError(f"needs {', '.join(missing)}: pip install 'ernievil2torch[{extra}]'")
        return value

    return Check(f"{check.rule}; needs the pip extra [{extra}]", apply)


def _device(value: Any) -> Any:
    from ..runtime.distributed import check_device  # imports torch: only commands that compute take --device

    return check_device(value)


#: A device: cpu, cuda, cuda:N or mps, and present on this machine.
DEVICE = Check("cpu, cuda, cuda:N or mps, available here", _device)


def _registered_model(value: Any) -> Any:
    names = list_models()
    if value not in names:
        raise InputError(f"must be a registered model name ({', '.join(names)}), not {value!r}")
    return value


#: A name of the model registry (:func:`ernievil2torch.config.list_models`).
MODEL_NAME = Check("a registered model name (" + ", ".join(list_models()) + ")", _registered_model)


def _hub_id(value: Any) -> Any:
    text = str(value)
    if parse_hub_id(text) is None or ":" in text or "@" in text:
        raise InputError(f"must be a Hub model id ORG/NAME, not {value!r}")
    return text


#: A Hugging Face Hub model id to publish under (``ORG/NAME``, no revision).
HUB_ID = Check("a Hub model id ORG/NAME", _hub_id)
