"""Every command line the README and docs/WORKFLOWS.md show parses: the same flags, spellings and positional
arguments (values are not checked here: the documents' files do not exist on this machine)."""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import List, Tuple

import pytest

from ernievil2torch.cli import COMMANDS, parse_arguments

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/WORKFLOWS.md")
# How a documented line starts -> the command-table entry it runs.
ENTRIES = {"ernievil2": None, "python convert.py": "convert", ".venv/bin/python convert.py": "convert",
           "python check.py logit_check": "check", ".venv/bin/python check.py logit_check": "check",
           "python test.py performance_check": "similarity", ".venv/bin/python test.py performance_check": "similarity",
           "torchrun --nproc_per_node 2 -m ernievil2torch.embed": "embed",
           "torchrun --nproc_per_node 2 -m ernievil2torch.finetune": "finetune"}


def documented_lines() -> List[Tuple[str, str, List[str]]]:
    """(where, command name, argv) of every command line inside the documents' ```bash blocks."""
    found = []
    for doc in DOCUMENTS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].split(" # ")[0].strip()
                for start, name in sorted(ENTRIES.items(), key=lambda item: -len(item[0])):
                    if line.startswith(start + " ") or line == start:
                        argv = shlex.split(line[len(start):])
                        if name is None:
                            name, argv = argv[0], argv[1:]
                        found.append((f"{doc}: {line}", name, argv))
                        break
    return found


LINES = documented_lines()


def test_the_documents_show_every_command():
    assert {name for _, name, _ in LINES} == set(COMMANDS)


@pytest.mark.parametrize("where,name,argv", LINES, ids=[where for where, _, _ in LINES])
def test_a_documented_line_parses(where, name, argv):
    unchecked = dataclasses.replace(COMMANDS[name], checks={})
    kwargs = parse_arguments(unchecked, [a.split("|")[0] for a in argv], f"ernievil2 {name}")
    flags = [a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")]
    assert set(flags) <= set(kwargs), where
