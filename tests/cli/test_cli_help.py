"""``--help`` of every command documents every flag, in full, with no rendering artefacts."""
from __future__ import annotations

import re
from typing import List

import pytest

from ernievil2torch.cli import COMMANDS, CONSOLE_SUMMARY, run_command
from ernievil2torch.cli.help import HELP_WIDTH, parse_docstring, plain_text

# Text that means the help leaks Python or docstring markup instead of words.
ARTEFACTS = ("Optional[", "Union[", "List[", "Sequence[", "NoneType", "<class", "``", ":class:", ":func:", ":mod:",
             "{formats}", "Type: Optional", "Args:")


def rendered(argv: List[str], capsys, component=COMMANDS, name: str = "ernievil2", summary: str = CONSOLE_SUMMARY
             ) -> str:
    capsys.readouterr()
    run_command(component, name=name, argv=argv, summary=summary)
    out, err = capsys.readouterr()
    assert err == ""
    return out


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_documents_every_flag_in_full(name, capsys):
    text = rendered([name, "--help"], capsys)
    command = COMMANDS[name]
    for section in ("NAME", "SYNOPSIS"):
        assert section in text
    assert f"ernievil2 {name} - " in text
    for artefact in ARTEFACTS:
        assert artefact not in text, artefact
    assert all(len(line) <= HELP_WIDTH for line in text.splitlines())
    assert "\n\n\n" not in text
    _, _, docs = parse_docstring(command.function().__doc__)
    for parameter in command.parameters():
        assert parameter.help, f"{name}: --{parameter.name} has no line in the docstring's Args"
        assert (f"--{parameter.name}" in text) or (f"    {parameter.name.upper()}\n" in text), parameter.name
        assert flat(plain_text(docs[parameter.name])) in flat(text), parameter.name  # nothing cut off
        if parameter.check is not None:
            assert flat(parameter.check.rule) in flat(text)


def test_the_lines_that_were_cut_or_garbled(capsys):
    evaluate = flat(rendered(["eval", "--help"], capsys))
    assert ("'pairs' (the official script's file mode: every line is one query each way). Type: text; one of "
            "grouped, pairs; default grouped.") in evaluate
    finetune = rendered(["finetune", "--help"], capsys)
    assert "Optional[]" not in finetune
    assert re.search(r"--max_steps=MAX_STEPS\n\s+optimizer steps to run instead of --epochs\.\n\s+Type: integer; > 0; "
                     r"default none\.", finetune)


def test_the_console_help_lists_every_command(capsys):
    text = rendered(["--help"], capsys)
    assert text == rendered([], capsys)
    assert flat(CONSOLE_SUMMARY) in flat(text)
    for name, command in COMMANDS.items():
        assert re.search(rf"^    {name} +{re.escape(command.summary.split()[0])}", text, re.M), name


def test_the_design_card_scripts_show_the_same_help(capsys):
    convert = flat(rendered(["--help"], capsys, COMMANDS["convert"], "convert.py"))
    assert convert.replace("convert.py", "ernievil2 convert") == flat(rendered(["convert", "--help"], capsys))
    check = flat(rendered(["logit_check", "--help"], capsys, {"logit_check": COMMANDS["check"]}, "check.py"))
    assert check.replace("check.py logit_check", "ernievil2 check") == flat(rendered(["check", "--help"], capsys))
