"""The vocab file: one reader for every consumer (tokenizer, converter, HF export), one place that finds it.

Format of the official release: ``token<TAB>id`` per line. PaddleNLP's copy has one token per line (id = line number,
from 0). Lines may mix both forms, as in the official reader; tokens are stripped of surrounding whitespace.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..constants import REQUIRED_SPECIAL_TOKENS, VOCAB_NAME
from ..errors import InputError

PathLike = Union[str, os.PathLike]


def read_vocab_entries(vocab_file: PathLike) -> List[Tuple[str, int]]:
    """``(token, id)`` for every line, in file order (a token listed twice appears twice).

    Raises :class:`InputError` for an unreadable, non-UTF-8 or empty file, a line with more than two tab-separated
    fields, and a non-integer or negative id, naming the line.
    """
    path = Path(vocab_file)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read vocab file '{path}': {exc}") from exc
    entries: List[Tuple[str, int]] = []
    with handle:
        try:
            for num, line in enumerate(handle):
                items = line.strip().split("\t")
                if len(items) > 2:
                    raise InputError(f"vocab file '{path}', line {num + 1}: expected 'token' or 'token<TAB>id', "
                                     f"found {len(items)} tab-separated fields")
                token = items[0].strip()
                if len(items) == 2:
                    try:
                        index = int(items[1])
                    except ValueError:
                        raise InputError(f"vocab file '{path}', line {num + 1}: id {items[1]!r} is not an "
                                         f"integer") from None
                    if index < 0:
                        raise InputError(f"vocab file '{path}', line {num + 1}: negative id {index}")
                else:
                    index = num
                entries.append((token, index))
        except UnicodeDecodeError as exc:
            raise InputError(f"vocab file '{path}' is not UTF-8 text: {exc}") from exc
    if not entries:
        raise InputError(f"vocab file '{path}' is empty")
    return entries


def load_vocab(vocab_file: PathLike) -> Dict[str, int]:
    """``{token: id}``; a token listed twice keeps the id of its last line, as the official reader does
    (``$``: 18005 in the released vocab)."""
    return dict(read_vocab_entries(vocab_file))


def check_special_tokens(vocab: Dict[str, int], vocab_file: PathLike) -> None:
    """:class:`InputError` unless ``[PAD]``, ``[CLS]``, ``[SEP]`` and ``[UNK]`` are all in the vocab."""
    missing = [t for t in REQUIRED_SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise InputError(f"vocab file '{vocab_file}' lacks the special token(s) {missing}: not an ERNIE vocab")


def resolve_vocab(model_dir: Optional[PathLike] = None, vocab: Optional[PathLike] = None) -> Path:
    """The vocab file to use: ``vocab`` when given, else ``<model_dir>/vocab.txt`` (``model_dir`` may also be the
    vocab file itself). :class:`InputError` with the fix when there is none."""
    if vocab is not None:
        path = Path(vocab)
        if not path.is_file():
            raise InputError(f"no vocab file at '{path}'")
        return path
    if model_dir is None:
        raise InputError("no vocab given: pass --vocab vocab.txt")
    base = Path(model_dir)
    path = base if base.is_file() else base / VOCAB_NAME
    if not path.is_file():
        raise InputError(f"no vocab file at '{path}': pass --vocab vocab.txt (or convert with --vocab)")
    return path
