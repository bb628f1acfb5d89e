"""From a command-line to keyword arguments, checked against the function's signature before the call.

A :class:`Command` names a function (an object, or ``"module:attribute"`` imported only when that command runs, so
building the command table imports nothing heavy). Its parameters come from ``inspect.signature`` (names, defaults,
which ones may be given by position), their types from the annotations (``Command.types`` where the signature has
none), their help from the docstring's ``Args:`` section (read by :mod:`~ernievil2torch.cli.help`), and their
constraints from ``Command.checks``. One
parser reads every command's argv:

* ``--name value``, ``--name=value``, ``--name-with-dashes`` for ``--name_with_dashes``; parameters without a
  default (and the others, in signature order) also by position;
* booleans strictly: ``true/false``, ``yes/no``, ``1/0`` in any case; a bare ``--flag`` (last, or followed by
  another flag) is true, ``--noflag`` false; any other word after ``--flag`` is refused;
* a list is comma-separated (``a,b``); a Python literal (``["a","b"]``, fire's form) is refused; ints and floats
  must read as such;
* after ``--`` every token is positional; fire's own flags there (``-- --trace``) are refused;
* a flag given twice keeps its last value (a script may append to a command line);
* ``-h``/``--help`` raises :class:`HelpRequested` with the help (:mod:`~ernievil2torch.cli.help`);
* an unknown flag, a missing value, a positional too many, a missing required argument, a value its
  check refuses, or a combination one of ``Command.rules`` refuses (a flag that does not apply) raises
  :class:`~ernievil2torch.errors.InputError` before the function is called.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import InputError
from .checks import Check
from .help import parse_docstring, render_help

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")

# The kinds of value a parameter takes.
STR, INT, FLOAT, BOOL, LIST, STR_OR_LIST = "str", "int", "float", "bool", "list", "str_or_list"
_KIND_WORDS = {STR: "text", INT: "integer", FLOAT: "number", BOOL: "true/false (a bare flag means true)",
               LIST: "comma-separated list", STR_OR_LIST: "text, or a comma-separated list"}
# fire's own flags (read after ``--``), refused by name now that fire is gone.
FIRE_FLAGS = ("--interactive", "-i", "--trace", "-t", "--verbose", "-v", "--separator", "--completion", "--help",
              "-h")
# A Python list, or a tuple (parentheses around a comma or a quote; a name such as "(2019)" stays a name).
_PYTHON_LITERAL = re.compile(r"^\s*(\[.*\]|\(.*[,'\"].*\))\s*$", re.DOTALL)


class HelpRequested(Exception):
    """``--help`` was given: the exception's text is the help to print (exit status 0)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a command as the command line sees it."""

    name: str
    kind: str
    required: bool
    default: Any
    positional: bool  # may be given by position (in signature order)
    help: str
    check: Optional[Check] = None

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def kind_words(self) -> str:
        """The kind of value, in words (for ``--help``)."""
        return _KIND_WORDS[self.kind]

    @property
    def takes_value(self) -> bool:
        """False for a boolean flag, which may be given bare."""
        return self.kind != BOOL


@dataclass(frozen=True)
class Command:
    """A command of the console: what it calls and what the command line must know about its parameters.

    Attributes:
        name: the command's name (``ernievil2 NAME``).
        target: the function, or ``"package.module:function"`` imported when the command runs or shows its help.
        summary: one line for the list of commands (the function's docstring gives the rest).
        leaves: what an interrupted run leaves behind (:mod:`~ernievil2torch.cli.outcome`), or None.
        checks: parameter name -> :class:`~ernievil2torch.cli.checks.Check` applied to a given value.
        types: parameter name -> type, where the signature has no usable annotation.
        rules: checks across values, each ``rule(values, given)`` -> a refusal (None when the command line is
            fine): ``values`` every parameter's value (the defaults included), ``given`` the names on the command
            line. They run after every value's own check, before the call.
    """

    name: str
    target: Union[Callable[..., Any], str]
    summary: str = ""
    leaves: Optional[str] = None
    checks: Mapping[str, Check] = field(default_factory=dict)
    types: Mapping[str, Any] = field(default_factory=dict)
    rules: Tuple[Callable[[Mapping[str, Any], AbstractSet[str]], Optional[str]], ...] = ()

    def function(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def parameters(self) -> List[Parameter]:
        """The function's parameters; raises ``ValueError`` if a check or type names no parameter (a bug)."""
        fn = self.function()
        signature = inspect.signature(fn)
        _, _, docs = parse_docstring(fn.__doc__ or "")
        hints = _annotations(fn, signature)
        named = set(signature.parameters)
        unknown = sorted((set(self.checks) | set(self.types)) - named)
        if unknown:
            raise ValueError(f"{self.name}: checks/types for parameters it does not have: {unknown}")
        out = []
        for p in signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            required = p.default is p.empty
            default = None if required else p.default
            annotation = self.types.get(p.name, hints.get(p.name))
            out.append(Parameter(p.name, _kind(annotation, default), required, default,
                                 p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD), docs.get(p.name, ""),
                                 self.checks.get(p.name)))
        return out


# ---- types --------------------------------------------------------------------------------------------------------
def _annotations(fn: Callable[..., Any], signature: inspect.Signature) -> Dict[str, Any]:
    """Annotations as types: string annotations are evaluated in the function's module (None where that fails)."""
    namespace = {**vars(typing), **vars(sys.modules.get(fn.__module__, typing))}
    hints: Dict[str, Any] = {}
    for name, p in signature.parameters.items():
        annotation = p.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the package's own annotations
            except Exception:  # noqa: BLE001 - an annotation we cannot read falls back to the default's type
                annotation = p.empty
        hints[name] = None if annotation is p.empty else annotation
    return hints


def _is_str_sequence(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (list, tuple, Sequence, typing.get_origin(Sequence[str]))


def _kind(annotation: Any, default: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Union:
        if len(args) == 1:
            return _kind(args[0], default)
        if str in args and any(_is_str_sequence(a) for a in args):
            return STR_OR_LIST
    if _is_str_sequence(annotation):
        return LIST
    for kind, python_type in ((BOOL, bool), (INT, int), (FLOAT, float), (STR, str)):
        if annotation is python_type:
            return kind
    for kind, python_type in ((BOOL, bool), (INT, int), (FLOAT, float)):
        if isinstance(default, python_type):
            return kind
    return STR


def parse_bool(text: str) -> bool:
    """true/yes/1 -> True, false/no/0 -> False (any case); anything else raises InputError."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InputError(f"expected true/false, yes/no or 1/0, not {text!r}")


def _convert(kind: str, text: str) -> Any:
    if kind == BOOL:
        return parse_bool(text)
    if kind == INT:
        if not re.fullmatch(r"[+-]?\d+", text.strip().replace("_", "")):
            raise InputError(f"expected an integer, not {text!r}")
        return int(text.strip().replace("_", ""))
    if kind == FLOAT:
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"expected a number, not {text!r}") from None
        if not math.isfinite(value):
            raise InputError(f"expected a finite number, not {text!r}")
        return value
    if kind in (LIST, STR_OR_LIST) and _PYTHON_LITERAL.match(text):
        raise InputError(f"Python literals are no longer read (fire's syntax was removed): write a comma-separated "
                         f"list such as a.jpg,b.jpg, not {text!r}")
    if kind == LIST or (kind == STR_OR_LIST and "," in text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise InputError(f"expected a comma-separated list, not {text!r}")
        return items
    return text


# ---- argv -> keyword arguments --------------------------------------------------------------------------------------
def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _looks_like_number(token: str) -> bool:
    return re.fullmatch(r"-\.?\d.*", token) is not None


def _unknown_flag(token: str, parameters: Sequence[Parameter]) -> str:
    close = difflib.get_close_matches(token.lstrip("-").replace("-", "_"), [p.name for p in parameters], n=1,
                                      cutoff=0.6)
    return f"unknown flag {token}" + (f" (did you mean --{close[0]}?)" if close else "")


def parse_arguments(command: Command, argv: Sequence[str], prog: str) -> Dict[str, Any]:
    """``argv`` as keyword arguments for ``command.function()``, every value converted and checked.

    Raises :class:`HelpRequested` for ``-h``/``--help`` and :class:`~ernievil2torch.errors.InputError` (its message
    starts with ``prog``) for anything that does not fit the signature or the checks; nothing else runs before.
    """
    parameters = command.parameters()
    by_name = {p.name: p for p in parameters}
    given: Dict[str, Any] = {}
    positionals: List[str] = []

    def fail(message: str) -> InputError:
        return InputError(f"{prog}: {message}; see {prog} --help")

    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in ("-h", "--help"):
            raise HelpRequested(render_help(command, prog))
        if token == "--":
            fire = [rest for rest in tokens[i:] if rest in FIRE_FLAGS or rest.partition("=")[0] == "--separator"]
            if fire:
                raise fail(f"{fire[0]} after -- was a flag of fire, which is no longer used; nothing after -- is "
                           "read as a flag")
            positionals += tokens[i:]
            break
        if not token.startswith("-") or token == "-" or _looks_like_number(token):
            positionals.append(token)
            continue
        if not token.startswith("--"):
            raise fail(f"unknown option {token} (flags are written --name)")
        name, has_value, value = token[2:].partition("=")
        key = name.replace("-", "_")
        negated = False
        if key not in by_name and not has_value:
            for prefix in ("no_", "no"):
                stem = key[len(prefix):]
                if key.startswith(prefix) and stem in by_name and by_name[stem].kind == BOOL:
                    key, negated = stem, True
                    break
        parameter = by_name.get(key)
        if parameter is None:
            raise fail(_unknown_flag(token.partition("=")[0], parameters))
        if parameter.kind == BOOL and not has_value:
            if negated:
                value = "false"
            elif i < len(tokens) and not tokens[i].startswith("--"):
                value, i = tokens[i], i + 1  # strictly a boolean word: a path here is a mistake, not a positional
            else:
                value = "true"
        elif not has_value:
            if i >= len(tokens) or tokens[i].startswith("--"):
                raise fail(f"{parameter.flag} needs a value")
            value, i = tokens[i], i + 1
        try:
            given[key] = _convert(parameter.kind, value)
        except InputError as exc:
            raise fail(f"{parameter.flag}: {exc}") from None

    free = [p for p in parameters if p.positional and p.name not in given]
    if len(positionals) > len(free):
        raise fail(f"unexpected argument {positionals[len(free)]!r}: {prog} takes at most {len(free)} here")
    for parameter, token in zip(free, positionals):
        try:
            given[parameter.name] = _convert(parameter.kind, token)
        except InputError as exc:
            raise fail(f"{parameter.name.upper()}: {exc}") from None
    missing = [p for p in parameters if p.required and p.name not in given]
    if missing:
        p = missing[0]
        where = f"the {_ordinal(free.index(p) + 1)} argument or " if p in free else ""
        raise fail(f"missing {p.name.upper()} (give it as {where}{p.flag})")
    for key, value in given.items():
        check = by_name[key].check
        if check is not None and value is not None:
            try:
                given[key] = check(value)
            except InputError as exc:
                raise fail(f"{by_name[key].flag}: {exc}") from None
    values = {**{p.name: p.default for p in parameters if not p.required}, **given}
    for rule in command.rules:
        refusal = rule(values, frozenset(given))
        if refusal:
            raise fail(refusal)
    return given
