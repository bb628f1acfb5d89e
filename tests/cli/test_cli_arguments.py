"""The command-line parser on stand-in functions: types read off the signature, strict booleans, every spelling,
the docstring's Args, the checks, and how the runner prints a result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import pytest

from ernievil2torch.cli import Command, parse_arguments, parse_bool, render_result, run_command
from ernievil2torch.cli.arguments import BOOL, FLOAT, INT, LIST, STR, STR_OR_LIST, HelpRequested
from ernievil2torch.cli.help import parse_docstring
from ernievil2torch.cli.checks import POSITIVE
from ernievil2torch.errors import InputError


def sample(source: str, out: str, count: int = 3, scale: float = 1.0, flag: bool = False,
           names: Optional[List[str]] = None, inputs: Union[str, Sequence[str]] = "x", note: Optional[str] = None,
           untyped=None):
    """One line.

    More words.

    Args:
        source: where from.
        out: where to,
            over two lines.
        count, scale: how many and how much.
        flag: a switch.
        names: comma list.
        inputs: one or many.
        note: free text.
        untyped: no annotation.

    Returns:
        nothing useful.
    """
    return dict(source=source, out=out, count=count, scale=scale, flag=flag, names=names, inputs=inputs)


SAMPLE = Command("sample", sample, "a stand-in", checks={"count": POSITIVE}, types={"untyped": int})


def parse(*argv: str) -> dict:
    return parse_arguments(SAMPLE, list(argv), "prog")


def test_kinds_come_from_the_signature_and_the_table():
    kinds = {p.name: p.kind for p in SAMPLE.parameters()}
    assert kinds == {"source": STR, "out": STR, "count": INT, "scale": FLOAT, "flag": BOOL, "names": LIST,
                     "inputs": STR_OR_LIST, "note": STR, "untyped": INT}
    assert [p.name for p in SAMPLE.parameters() if p.required] == ["source", "out"]


@pytest.mark.parametrize("word,value", [(w, True) for w in ("true", "True", "TRUE", "yes", "Yes", "1")]
                         + [(w, False) for w in ("false", "False", "FALSE", "no", "NO", "0")])
def test_booleans_are_strict_in_any_case(word, value):
    assert parse_bool(word) is value
    assert parse("a", "b", "--flag", word)["flag"] is value
    assert parse("a", "b", f"--flag={word}")["flag"] is value


@pytest.mark.parametrize("word", ["", "on", "off", "t", "f", "2", "-1", "truthy", "none"])
def test_other_words_are_not_booleans(word):
    with pytest.raises(InputError, match="expected true/false, yes/no or 1/0"):
        parse_bool(word)
    with pytest.raises(InputError, match="--flag: expected true/false"):
        parse("a", "b", f"--flag={word}")


def test_every_spelling():
    assert parse("a", "b") == {"source": "a", "out": "b"}
    assert parse("--out", "b", "a") == {"source": "a", "out": "b"}  # flags first, positionals fill the rest
    assert parse("a", "b", "5", "0.5") == {"source": "a", "out": "b", "count": 5, "scale": 0.5}
    assert parse("a", "b", "--flag")["flag"] is True
    assert parse("a", "b", "--flag", "--count", "2") == {"source": "a", "out": "b", "flag": True, "count": 2}
    assert parse("a", "b", "--noflag")["flag"] is False
    assert parse("a", "b", "--no-flag")["flag"] is False
    assert parse("a", "b", "--names", "x, y,z")["names"] == ["x", "y", "z"]
    assert parse("a", "b", "--inputs", "p")["inputs"] == "p" and parse("a", "b", "--inputs=p,q")["inputs"] == ["p", "q"]
    assert parse("a", "b", "--scale", "-1e-3")["scale"] == -1e-3
    assert parse("a", "b", "--count", "1_000")["count"] == 1000
    assert parse("2024", "b")["source"] == "2024"  # a path that looks like a number stays a string
    assert parse("a", "b", "--untyped", "7")["untyped"] == 7
    assert parse("a", "--", "-b")["out"] == "-b"
    assert parse("a", "--out", "c", "--out", "d")["out"] == "d"  # a repeated flag: the last value counts


@pytest.mark.parametrize("argv,message", [
    (["a"], "prog: missing OUT (give it as the 2nd argument or --out); see prog --help"),
    (["--source", "a"], "prog: missing OUT (give it as the 1st argument or --out); see prog --help"),
    (["a", "b", "--cuont", "2"], "prog: unknown flag --cuont (did you mean --count?); see prog --help"),
    (["a", "b", "--count", "0"], "prog: --count: must be > 0, not 0; see prog --help"),
    (["a", "b", "--count", "2.5"], "prog: --count: expected an integer, not '2.5'; see prog --help"),
    (["a", "b", "--scale", "nan"], "prog: --scale: expected a finite number, not 'nan'; see prog --help"),
    (["a", "b", "--flag", "maybe"], "prog: --flag: expected true/false, yes/no or 1/0, not 'maybe'; see prog --help"),
    (["a", "b", "--names", ","], "prog: --names: expected a comma-separated list, not ','; see prog --help"),
    (["a", "b", "--note"], "prog: --note needs a value; see prog --help"),
    (["a", "b", "--note", "--flag"], "prog: --note needs a value; see prog --help"),
    (["a", "b", "--out", "c"], "prog: COUNT: expected an integer, not 'b'; see prog --help"),
    (["a", "b", "3", "1", "true", "n", "i", "x", "9", "extra"],
     "prog: unexpected argument 'extra': prog takes at most 9 here; see prog --help"),
    (["-x", "a", "b"], "prog: unknown option -x (flags are written --name); see prog --help"),
    (["a", "b", "--noout"], "prog: unknown flag --noout (did you mean --out?); see prog --help"),
])
def test_mistakes(argv, message):
    with pytest.raises(InputError) as raised:
        parse(*argv)
    assert str(raised.value) == message


def test_help_is_requested_anywhere():
    for argv in (["--help"], ["a", "-h"], ["a", "b", "--count", "2", "--help"]):
        with pytest.raises(HelpRequested, match="prog - One line."):
            parse(*argv)


def test_docstring_args():
    summary, description, docs = parse_docstring(sample.__doc__)
    assert (summary, description) == ("One line.", "More words.")
    assert docs["out"] == "where to, over two lines."
    assert docs["count"] == docs["scale"] == "how many and how much."
    assert "nothing useful." not in docs.values()


def test_a_check_for_a_parameter_that_does_not_exist_is_a_bug():
    with pytest.raises(ValueError, match=r"\['cuont'\]"):
        Command("sample", sample, checks={"cuont": POSITIVE}).parameters()


@dataclass
class Done:
    count: int

    def summary(self) -> str:
        return f"did {self.count}"


@pytest.mark.parametrize("result,text", [(Done(2), "did 2"), ("plain", "plain"), (None, None),
                                          ({"a": 1, "long": 2}, "a   : 1\nlong: 2")])
def test_what_the_runner_prints(result, text, capsys):
    assert render_result(result) == text
    run_command(lambda: result, name="prog", argv=[])
    assert capsys.readouterr().out == ("" if text is None else text + "\n")
