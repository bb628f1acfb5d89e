"""``tokenizer.json`` (the ``tokenizers`` library's format, read by ``transformers.PreTrainedTokenizerFast``) that
gives the official ERNIE-ViL 2.0 ids, i.e. :class:`~ernievil2torch.processing.ErnieViL2Tokenizer`'s, on every text.

Why not HF's own BERT pieces (``BertNormalizer``, ``BertPreTokenizer``): they decide which characters are control,
whitespace, punctuation, accents and Chinese from the Rust crates' Unicode tables, not from Python's
``unicodedata`` that the official code (and ours) uses: unassigned and private-use code points, marks newer than
their tables and CJK Extension E (``is_chinese_char`` there starts at U+2B920, BERT's at U+2B820) come out
differently, and its lower-casing has no final sigma. Here every decision is an explicit table built at export
time from the rules of :mod:`ernievil2torch.processing.tokenizer` (its :func:`clean_char` and :func:`split_char`)
and the running Python's ``str.lower`` and NFD, so the loading library's tables play (almost) no part.

normalizer, in the official order (clean, lower-case, NFD, strip marks):
  1. ``Replace``: delete every code point the official cleaning drops (``C*`` but tab/newline/return, U+0000,
     U+FFFD), as one regex class of explicit ranges;
  2. ``Replace``: tab, newline, return and every ``Zs`` to a space;
  3. ``Replace``: a capital sigma in Python's final-sigma context (after a cased letter, not before one, skipping
     case-ignorable characters) to ``ς``; both classes are probed from ``str.lower`` itself;
  4. ``Replace``: delete every ``Mn`` mark (the accent stripping; the marks inside precomposed letters go with
     their letter's form in steps 5 and 7);
  5. ``Replace``, one per form: the characters whose stripped NFD is two or three characters (43 in Unicode 14:
     Indic vowel signs and letters, musical symbols) to that form, and the two-byte spacing or enclosing marks
     (U+0488, U+0489) to their placeholders of step 6;
  6-8. three ``Precompiled`` character maps (SentencePiece's format, :mod:`.charsmap`), one pass each: (6) every
     spacing or enclosing mark (``Mc``, ``Me`` and the few other characters that extend a grapheme cluster) to a
     placeholder of its own (a supplementary private-use character, which step 1 removed from the text); (7)
     every other character whose lower-cased, NFD, mark-stripped form is one other character to that character
     (letters, compatibility ideographs, line and paragraph separators to a space); (8) each placeholder to its
     mark's own form. Why three: ``Precompiled`` looks a whole grapheme cluster up by its first character when
     the cluster is under 6 bytes, so ``"A"`` + U+20DD would come out ``"a"``, the mark lost. With the marks out
     of the way no cluster in step 7 holds two characters, a cluster in step 6 starts with a mark only at the
     start of the text (two marks of 3+ bytes: the per-character path), and one in step 8 starts with a 4-byte
     placeholder (likewise). ``tokenizers`` mis-tracks the offsets of what follows when this normalizer
     lengthens a character, so the longer forms are step 5's;
  9. ``NFD``: by now only Hangul syllables change (to their jamo, an algorithm fixed since Unicode 2.0). Every
     other character is already in Python's NFD, which no later Unicode version changes (normalization
     stability); a character the library's tables lack is left alone, as it should be.

pre-tokenizer: split on spaces (removed), then isolate every punctuation character (ASCII non-alphanumerics and
``P*``) and CJK ideograph (BERT's blocks) as a word of its own, as one explicit class.

model: greedy longest-match-first WordPiece over the vocab (``##`` continuations, a word over 100 characters is
``[UNK]``), and ``[CLS] ... [SEP]`` around every text (token type 0: the model has no token types).

The one rule not reproduced is Python's canonical reordering across characters: NFD sorts a run of combining
characters by combining class, and a few combining characters are not ``Mn`` (25 in Unicode 14: ``Mc`` signs
and musical symbols), so two of them could come out in another order. A word holding a character the vocab lacks is
``[UNK]`` in any order, so only a vocab holding one of them could see it: :func:`tokenizer_json` refuses such a
vocab (the released vocab holds none).
"""
from __future__ import annotations

import base64
import functools
import unicodedata
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from ..constants import CLS_TOKEN, MASK_TOKEN, PAD_TOKEN, SEP_TOKEN, UNK_TOKEN
from ..errors import InputError
from ..processing.tokenizer import MAX_INPUT_CHARS_PER_WORD, clean_char, split_char
from .charsmap import precompiled_charsmap

_SIGMA, _FINAL_SIGMA = "\u03a3", "\u03c2"
_SURROGATES = range(0xD800, 0xE000)
_HANGUL = range(0xAC00, 0xD7A4)
#: Characters outside ``Mc``/``Me``/``Mn`` that extend a grapheme cluster (UAX #29 Extend or SpacingMark) and are
#: not dropped by the cleaning: halfwidth katakana sound marks, emoji skin tones, Thai and Lao AM.
_OTHER_EXTENDERS = (0xFF9E, 0xFF9F, *range(0x1F3FB, 0x1F400), 0x0E33, 0x0EB3)
#: Placeholders of step 6: Supplementary Private Use Area-A, 4 bytes each in UTF-8.
_PLACEHOLDER_BASE = 0xF0000


def _code_points() -> Iterable[int]:
    return (cp for cp in range(0x110000) if cp not in _SURROGATES)


def _folded(char: str) -> str:
    """What the official steps make of one cleaned character before punctuation is split off: lower-cased, NFD,
    ``Mn`` marks dropped, whitespace as a plain space."""
    out = []
    for ch in unicodedata.normalize("NFD", char.lower()):
        if split_char(ch):
            out.append(" " if ch.isspace() else ch)
    return "".join(out)


@dataclass(frozen=True)
class Tables:
    """The explicit tables of the module docstring (code points sorted; maps from character to replacement)."""

    dropped: Tuple[int, ...]           #: step 1
    to_space: Tuple[int, ...]          #: step 2
    cased: Tuple[int, ...]             #: step 3: cased and not case-ignorable
    case_ignorable: Tuple[int, ...]    #: step 3
    marks: Tuple[int, ...]             #: step 4
    expansions: Dict[str, Tuple[int, ...]]  #: step 5: form -> the characters that become it
    short_marks: Dict[str, str]        #: step 5: a mark under 3 bytes -> its placeholder
    marks_out: Dict[str, str]          #: step 6: mark -> placeholder
    charmap: Dict[str, str]            #: step 7
    marks_back: Dict[str, str]         #: step 8: placeholder -> the mark's form
    isolated: Tuple[int, ...]          #: pre-tokenizer: punctuation and CJK
    reordered: Tuple[str, ...]         #: combining characters that are not Mn (see the module docstring)


@functools.lru_cache(maxsize=1)
def tables() -> Tables:
    """The tables from the running Python's ``unicodedata`` and our tokenizer's rules (about 2 s; cached)."""
    dropped, to_space, cased, ignorable, marks, isolated, reordered = [], [], [], [], [], [], []
    expansions: Dict[str, List[int]] = {}
    folds: Dict[str, str] = {}
    extenders: List[str] = []
    for cp in _code_points():
        char = chr(cp)
        if split_char(char).startswith(" "):
            isolated.append(cp)
        cleaned = clean_char(char)
        if cleaned != char:
            (dropped if cleaned == "" else to_space).append(cp)
            continue
        category = unicodedata.category(char)
        if unicodedata.combining(char) and category != "Mn":
            reordered.append(char)
        # CPython's final sigma: the character before the sigma, once case-ignorable ones are skipped, must be
        # cased; after it, none may be. Probed, so this is str.lower's own view.
        if (char + _SIGMA).lower().endswith(_FINAL_SIGMA):
            cased.append(cp)
        elif ("A" + char + _SIGMA).lower().endswith(_FINAL_SIGMA):
            ignorable.append(cp)
        folded = _folded(char)
        if folded == "":
            marks.append(cp)
        elif cp in _HANGUL:
            continue  # step 9
        elif len(folded) > 1:
            expansions.setdefault(folded, []).append(cp)
        elif category in ("Mc", "Me") or cp in _OTHER_EXTENDERS:
            extenders.append(char)
            folds[char] = folded
        elif folded != char:
            folds[char] = folded
    placeholders = {mark: chr(_PLACEHOLDER_BASE + i) for i, mark in enumerate(extenders)}
    short = {mark: p for mark, p in placeholders.items() if len(mark.encode("utf-8")) < 3}
    return Tables(
        dropped=tuple(dropped), to_space=tuple(to_space), cased=tuple(cased), case_ignorable=tuple(ignorable),
        marks=tuple(marks), expansions={form: tuple(cps) for form, cps in expansions.items()}, short_marks=short,
        marks_out={mark: p for mark, p in placeholders.items() if mark not in short},
        charmap={char: form for char, form in folds.items() if char not in placeholders},
        marks_back={p: folds[mark] for mark, p in placeholders.items()},
        isolated=tuple(isolated), reordered=tuple(reordered))


def _ranges(code_points: Iterable[int]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for cp in sorted(code_points):
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def char_class(code_points: Iterable[int]) -> str:
    """An Oniguruma character class (``tokenizers``' regex engine) of exactly ``code_points``."""
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _ranges(code_points)]
    return "[" + "".join(parts) + "]"


def _replace(pattern: str, content: str) -> dict:
    return {"type": "Replace", "pattern": {"Regex": pattern}, "content": content}


def _charmap(mapping: Dict[str, str]) -> dict:
    return {"type": "Precompiled",
            "precompiled_charsmap": base64.b64encode(precompiled_charsmap(mapping)).decode("ascii")}


def normalizer() -> dict:
    """Steps 1-9 of the module docstring as a ``tokenizers`` ``Sequence`` normalizer."""
    t = tables()
    cased, ignorable = char_class(t.cased), char_class(t.case_ignorable)
    return {"type": "Sequence", "normalizers": [
        _replace(char_class(t.dropped), ""),
        _replace(char_class(t.to_space), " "),
        _replace(f"(?<={cased}{ignorable}*)\\x{{3A3}}(?!{ignorable}*{cased})", _FINAL_SIGMA),
        _replace(char_class(t.marks), ""),
        *(_replace(char_class(cps), form) for form, cps in sorted(t.expansions.items())),
        *(_replace(char_class([ord(mark)]), p) for mark, p in sorted(t.short_marks.items())),
        _charmap(t.marks_out),
        _charmap(t.charmap),
        _charmap(t.marks_back),
        {"type": "NFD"},
    ]}


def pre_tokenizer() -> dict:
    """Split on spaces, then isolate punctuation and CJK ideographs."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": char_class(tables().isolated)}, "behavior": "Isolated",
         "invert": False},
    ]}


def tokenizer_json(vocab: Dict[str, int]) -> dict:
    """The whole ``tokenizer.json`` for ``vocab`` (token -> id, as :func:`~ernievil2torch.processing.vocab.load_vocab`
    reads it: a token listed twice keeps its last id, as the official reader does).

    Raises :class:`InputError` if the vocab lacks a special token or holds a character whose order NFD might
    change (see the module docstring).
    """
    missing = [t for t in (PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, UNK_TOKEN) if t not in vocab]
    if missing:
        raise InputError(f"the vocab lacks {missing}: not an ERNIE vocab")
    held = {ch for token in vocab for ch in token} & set(tables().reordered)
    if held:
        names = ", ".join(f"U+{ord(ch):04X}" for ch in sorted(held))
        raise InputError(f"the vocab holds the combining character(s) {names}, which Python's NFD may reorder "
                         "among themselves: the package's tokenizer.json cannot reproduce that order")
    specials = [t for t in (PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN, UNK_TOKEN) if t in vocab]
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in sorted(specials, key=vocab.__getitem__)]

    def special(token: str) -> dict:
        return {"SpecialToken": {"id": token, "type_id": 0}}

    def sequence(name: str) -> dict:
        return {"Sequence": {"id": name, "type_id": 0}}

    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer(), "pre_tokenizer": pre_tokenizer(),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(CLS_TOKEN), sequence("A"), special(SEP_TOKEN)],
            "pair": [special(CLS_TOKEN), sequence("A"), special(SEP_TOKEN), sequence("B"), special(SEP_TOKEN)],
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in (CLS_TOKEN, SEP_TOKEN)},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordPiece", "unk_token": UNK_TOKEN, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD,
                  "vocab": dict(sorted(vocab.items(), key=lambda item: item[1]))},
    }
