"""The help of the command line, read off each command's function: its docstring's first paragraph (NAME), the
rest before ``Args:`` (DESCRIPTION), and per parameter its ``Args:`` text, its kind, its check's rule and its
default (FLAGS). :func:`parse_docstring` is also what :class:`~ernievil2torch.cli.arguments.Command` reads the
parameters' help with, so this module imports nothing of the command line: a command and its parameters arrive as
the objects :mod:`~ernievil2torch.cli.arguments` makes.
"""
from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Tuple

HELP_WIDTH = 100


# ---- docstrings ---------------------------------------------------------------------------------------------------
_ARG_LINE = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> Tuple[str, str, Dict[str, str]]:
    """(first paragraph, the rest before ``Args:``, {parameter: its Args text joined into one paragraph})."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        start = len(lines)
    paragraphs = [" ".join(line.strip() for line in block.splitlines())
                  for block in "\n".join(lines[:start]).strip().split("\n\n") if block.strip()]
    summary = paragraphs[0] if paragraphs else ""
    description = "\n\n".join(paragraphs[1:])
    docs: Dict[str, str] = {}
    names: List[str] = []
    indent: Optional[int] = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # Returns:, Raises:, ...
        match = _ARG_LINE.match(line.strip())
        if (indent is None or depth <= indent) and match:
            indent = depth
            names = [name.strip() for name in match.group(1).split(",")]
            for name in names:
                docs[name] = match.group(2).strip()
        elif names:
            for name in names:
                docs[name] = f"{docs[name]} {line.strip()}".strip()
    return summary, description, docs


# ---- help -----------------------------------------------------------------------------------------------------------
_ROLE = re.compile(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`")


def plain_text(text: str) -> str:
    """Docstring markup as terminal text: ``:class:`~a.b.C``` -> ``C``, double backquotes -> none."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def _paragraph(text: str, indent: int) -> List[str]:
    pad = " " * indent
    return textwrap.wrap(plain_text(text), HELP_WIDTH, initial_indent=pad, subsequent_indent=pad, break_long_words=False,
                         break_on_hyphens=False) or [pad.rstrip()]


def _describe(parameter: Any) -> str:
    facts = [f"Type: {parameter.kind_words}"]
    if parameter.check is not None:
        facts.append(parameter.check.rule)
    if not parameter.required:
        default = parameter.default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, (list, tuple)):
            shown = ",".join(map(str, default)) or "none"
        else:
            shown = "none" if default is None else str(default)
        facts.append(f"default {shown}")
    return "; ".join(facts) + "."


def render_help(command: Any, prog: str) -> str:
    """The help of one command: NAME, SYNOPSIS, DESCRIPTION, POSITIONAL ARGUMENTS, FLAGS (every parameter)."""
    fn = command.function()
    summary, description, _ = parse_docstring(fn.__doc__ or "")
    parameters = command.parameters()
    required = [p for p in parameters if p.required and p.positional]
    flags = [p for p in parameters if p not in required]
    lines = ["NAME", *_paragraph(f"{prog} - {summary or command.summary}", 4), "", "SYNOPSIS",
             "    " + " ".join([prog, *(p.name.upper() for p in required)] + (["<flags>"] if flags else [])), ""]
    if description:
        lines.append("DESCRIPTION")
        for block in description.split("\n\n"):
            lines += _paragraph(block, 4) + [""]
    if required:
        lines.append("POSITIONAL ARGUMENTS")
        for p in required:
            lines += [f"    {p.name.upper()}", *_paragraph(p.help, 8), *_paragraph(_describe(p), 8)]
        lines.append("")
    if flags:
        lines.append("FLAGS")
        for p in flags:
            lines += [f"    {p.flag}" + (f"={p.name.upper()}" if p.takes_value else ""),
                      *_paragraph(p.help, 8), *_paragraph(_describe(p), 8)]
        lines.append("")
    lines.append("NOTES")
    lines += _paragraph("Flags may be written --name value or --name=value, with - or _ inside the name. "
                        + ("Positional arguments may also be given as flags. " if required else ""), 4)
    return "\n".join(lines).rstrip() + "\n"


def render_commands(commands: Mapping[str, Any], prog: str, summary: str) -> str:
    """The help of a command group: its summary and one line per command (imports none of them)."""
    width = max(len(name) for name in commands) + 2
    lines = ["NAME", *_paragraph(f"{prog} - {summary}", 4), "", "SYNOPSIS", f"    {prog} COMMAND [ARGUMENTS]",
             f"    {prog} COMMAND --help", "", "COMMANDS"]
    for name, command in commands.items():
        lines += textwrap.wrap(command.summary, HELP_WIDTH, initial_indent=f"    {name.ljust(width)}",
                               subsequent_indent=" " * (4 + width)) or [f"    {name}"]
    return "\n".join(lines) + "\n"
