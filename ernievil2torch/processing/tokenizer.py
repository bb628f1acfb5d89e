"""ERNIE-ViL 2.0 text tokenizer: Baidu's BERT-style ``FullTokenizer`` (basic tokenizer + greedy WordPiece).

The rules are those of the official code (``Research/ERNIE-ViL2/ernievil2/utils/tokenizer.py`` in
PaddlePaddle/ERNIE, branch ``ernie-kit-open-v1.0``), applied in the same order:

1. **clean**: drop U+0000, U+FFFD and every character of a ``C*`` category (control, format, surrogate,
   private use, unassigned) except ``\\t``, ``\\n``, ``\\r``; turn ``' '``, ``\\t``, ``\\n``, ``\\r`` and every
   ``Zs`` character into a plain space;
2. put spaces around every CJK ideograph (BERT's ``_is_chinese_char`` blocks), so Chinese is tokenised per
   character;
3. split on whitespace (Python's ``str.split()``, which also splits on U+2028/U+2029);
4. lower-case, then NFD and drop every ``Mn`` (non-spacing mark) character, i.e. strip accents;
5. split off punctuation: ASCII non-alphanumerics (code points 33-47, 58-64, 91-96, 123-126) and every ``P*``
   character. Symbols (``S*``, e.g. ``＄``, ``€``, emoji) are **not** split off;
6. greedy longest-match-first WordPiece with ``##`` continuations; a word longer than 100 characters, or one
   that cannot be covered by vocabulary pieces, becomes a single ``[UNK]``.

Character classes come from the running Python's :mod:`unicodedata`, as in the official code.

Differences from PaddleNLP 2.8.1's ``ErnieViLTokenizer`` (kept deliberately, the official rules win):

* PaddleNLP also splits off every ``S*`` symbol and the characters ``² º 〇 µ ŋ`` (its ``_is_symbol``):
  ``"＄5"`` is ``['＄', '##5']`` here and ``['＄', '5']`` there;
* PaddleNLP treats the literal strings ``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``, ``[UNK]`` inside the text as
  special tokens; here they are ordinary text (``"[CLS]"`` -> ``'[', 'cl', '##s', ']'``);
* PaddleNLP lower-cases character by character, the official code word by word: a word-final capital sigma
  ``Σ`` becomes ``ς`` here (Python's final-sigma rule) and ``σ`` there.

Implementation: the per-character passes are two ``str.translate`` calls (with tables filled lazily per
character), ``str.lower`` and one NFD over the whole text, equivalent to the official per-word loops because no
step's effect crosses a space; WordPiece results are cached per word.
"""
from __future__ import annotations

import itertools
import os
import re
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..constants import (CLS_TOKEN, DEFAULT_MAX_LENGTH, MASK_TOKEN, MAX_TEXT_POSITIONS, PAD_TOKEN, SEP_TOKEN,
                         UNK_TOKEN, VOCAB_NAME)
from ..errors import InputError
from .vocab import check_special_tokens, load_vocab, resolve_vocab

__all__ = ["ErnieViL2Tokenizer", "basic_tokenize", "clean_char", "split_char"]

MAX_INPUT_CHARS_PER_WORD = 100

# BERT's _is_chinese_char blocks (inclusive).
_CJK_RANGES: Tuple[Tuple[int, int], ...] = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
_ASCII_PUNCT_RANGES: Tuple[Tuple[int, int], ...] = ((33, 47), (58, 64), (91, 96), (123, 126))


def _is_cjk(cp: int) -> bool:
    for a, b in _CJK_RANGES:
        if a <= cp <= b:
            return True
    return False


def _is_ascii_punct(cp: int) -> bool:
    for a, b in _ASCII_PUNCT_RANGES:
        if a <= cp <= b:
            return True
    return False


def clean_char(char: str) -> str:
    """Pass 1 (step 1 of the module docstring) on one character: ``""`` if it is dropped, ``" "`` if it is
    whitespace, else the character. Uncached; exporters build their own tables from it (``tokenizer.json``)."""
    cat = unicodedata.category(char)
    if char in "\t\n\r" or cat == "Zs":
        return " "
    if char == "\0" or char == "\ufffd" or cat[0] == "C":
        return ""
    return char


def split_char(char: str) -> str:
    """Pass 2 on one character of lower-cased NFD text: ``""`` for a dropped mark (``Mn``), ``" c "`` for
    punctuation or a CJK ideograph (a word of its own), else the character. Uncached."""
    cat = unicodedata.category(char)
    if cat == "Mn":
        return ""
    cp = ord(char)
    if _is_ascii_punct(cp) or cat[0] == "P" or _is_cjk(cp):
        return " " + char + " "
    return char


class _CleanTable(dict):
    """``str.translate`` table of pass 1: drop ``C*`` (but \\t \\n \\r), U+0000 and U+FFFD; whitespace to ``' '``.

    Entries are computed on first sight of a character (``__missing__``) and cached, so the table only ever
    holds the characters met so far. A ``LookupError`` leaves the character unchanged.
    """

    def __missing__(self, cp: int):
        value = clean_char(chr(cp)) or None  # None: delete
        self[cp] = value
        return value


class _SplitTable(dict):
    """``str.translate`` table of pass 2 (after lower-casing and NFD): drop ``Mn`` marks, space out punctuation
    and CJK ideographs.

    Spacing CJK here rather than before lower-casing (as the official code does) gives the same words: ideographs
    are unchanged by lower-casing, NFD maps the compatibility ideographs to other ideographs, and an ideograph, like
    a space, is neither cased nor case-ignorable (final sigma) and has combining class 0 (canonical reordering).
    """

    def __missing__(self, cp: int):
        value = split_char(chr(cp)) or None  # None: delete
        self[cp] = value
        return value


_CLEAN = _CleanTable()
_SPLIT = _SplitTable()
_NOT_PLAIN_ASCII = re.compile(r"[^\t\n\r\x20-\x7e]")

# Batches are tokenised as one string, texts separated by a private-use character that the batch's cleaning table
# keeps as a word of its own (the ordinary table deletes it, as the official code does: it is category Co).
# A batch in which some text holds this character is tokenised text by text instead.
_SENTINEL = "\ue000"
_CLEAN_BATCH = _CleanTable()
_CLEAN_BATCH[ord(_SENTINEL)] = _SENTINEL


def basic_tokenize(text: str, _clean: Dict[int, object] = _CLEAN) -> List[str]:
    """Steps 1-5 of the module docstring: the official ``BasicTokenizer`` (lower-casing on) as a list of words."""
    if _NOT_PLAIN_ASCII.search(text) is None:
        # Printable ASCII plus \t \n \r: nothing to clean, no CJK, no accents; str.split handles \t \n \r.
        return text.lower().translate(_SPLIT).split()
    for char in set(text):
        if _clean[ord(char)] != char:  # something to delete or turn into a space
            text = text.translate(_clean)
            break
    # Lower-casing and NFD over the whole string equal the official per-word calls: the final-sigma context and
    # canonical reordering both stop at a space.
    text = text.lower()
    if not unicodedata.is_normalized("NFD", text):
        text = unicodedata.normalize("NFD", text)
    return text.translate(_SPLIT).split()


TextInput = Union[str, Sequence[str]]


class ErnieViL2Tokenizer:
    """The official ERNIE-ViL 2.0 tokenizer (see the module docstring for the exact rules).

    ``tokenizer(texts)`` returns the official model input: ``[CLS] + ids[:max_length - 2] + [SEP]``, padded with
    the ``[PAD]`` id to ``max_length`` (48 by default, as in the official evaluation).

    * **Truncation**: text longer than ``max_length - 2`` word pieces is silently cut to its first
      ``max_length - 2`` pieces; ``[SEP]`` is always kept at the end. ``len(tokenizer.encode(text))`` tells whether
      a text will be cut.
    * **Empty text**: ``""``, whitespace-only text and text that cleaning removes entirely (controls, U+FFFD, lone
      surrogates) are valid and give ``[CLS] [SEP]``.
    * **Bad input**: ``None``, ``bytes`` or anything else that is not ``str`` raises :class:`InputError`, as does an
      empty batch. Literal ``"[CLS]"`` etc. in the text are ordinary characters, never special tokens.

    The special ids are read from the vocab file (``[PAD]`` 0, ``[CLS]`` 1, ``[SEP]`` 2, ``[UNK]`` 39979 in the
    released vocab), never assumed.
    """


    def __init__(self, vocab_file: Union[str, os.PathLike], *, cache_size: int = 1 << 18) -> None:
        self.vocab_file = str(vocab_file)
        self.vocab: Dict[str, int] = load_vocab(vocab_file)
        check_special_tokens(self.vocab, vocab_file)
        self.pad_token_id = self.vocab[PAD_TOKEN]
        self.cls_token_id = self.vocab[CLS_TOKEN]
        self.sep_token_id = self.vocab[SEP_TOKEN]
        self.unk_token_id = self.vocab[UNK_TOKEN]
        self.mask_token_id = self.vocab.get(MASK_TOKEN)
        self.ids_to_tokens: Dict[int, str] = {i: t for t, i in self.vocab.items()}
        # Longest vocab entries with and without "##": bound the greedy search without changing its result.
        self._max_head = max((len(t) for t in self.vocab if not t.startswith("##")), default=1)
        self._max_tail = max((len(t) - 2 for t in self.vocab if t.startswith("##")), default=1)
        self._cache_size = cache_size
        self._cache: Dict[str, Tuple[Tuple[str, ...], Tuple[int, ...]]] = {}

    # ---- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs) -> "ErnieViL2Tokenizer":
        """Load ``<path>/vocab.txt`` (``path`` may also be the vocab file itself)."""
        return cls(resolve_vocab(path), **kwargs)

    def save_pretrained(self, path: Union[str, os.PathLike]) -> Path:
        """Write ``<path>/vocab.txt`` in the official ``token<TAB>id`` form (ids as loaded)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        target = out / VOCAB_NAME
        lines = [f"{t}\t{i}" for t, i in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return target

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (39,979 for the released vocab, whose ids run to 39,979)."""
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_file={self.vocab_file!r}, tokens={len(self.vocab)})"

    # ---- tokenisation ---------------------------------------------------------------------------------------
    def _wordpiece(self, word: str) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        vocab = self.vocab
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            result: Tuple[Tuple[str, ...], Tuple[int, ...]] = ((UNK_TOKEN,), (self.unk_token_id,))
        else:
            pieces: List[str] = []
            start, n = 0, len(word)
            while start < n:
                limit = self._max_head if start == 0 else self._max_tail
                end = min(n, start + limit)
                found = None
                while start < end:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in vocab:
                        found = piece
                        break
                    end -= 1
                if found is None:
                    pieces = [UNK_TOKEN]
                    break
                pieces.append(found)
                start = end
            result = (tuple(pieces), tuple(vocab[p] for p in pieces))
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[word] = result
        return result

    @staticmethod
    def _check_text(text: object, where: str = "text") -> str:
        if not isinstance(text, str):
            kind = "None" if text is None else type(text).__name__
            raise InputError(f"{where} must be a str, got {kind}")
        return text

    def tokenize(self, text: str) -> List[str]:
        """Word pieces of ``text`` (no special tokens)."""
        text = self._check_text(text)
        out: List[str] = []
        for word in basic_tokenize(text):
            out.extend(self._wordpiece(word)[0])
        return out

    def encode(self, text: str) -> List[int]:
        """Vocabulary ids of ``text`` (no special tokens, no truncation)."""
        text = self._check_text(text)
        out: List[int] = []
        cache = self._cache
        for word in basic_tokenize(text):
            hit = cache.get(word)
            out.extend((hit if hit is not None else self._wordpiece(word))[1])
        return out

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> List[int]:
        unk = self.unk_token_id
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> List[str]:
        return [self.ids_to_tokens.get(int(i), UNK_TOKEN) for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Readable text from ids: pieces joined, ``##`` continuations glued, CJK characters not spaced."""
        special = {self.pad_token_id, self.cls_token_id, self.sep_token_id}
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        tokens = [self.ids_to_tokens.get(i, UNK_TOKEN) for i in ids if not (skip_special_tokens and i in special)]
        text = ""
        prev_cjk = True
        for tok in tokens:
            if tok.startswith("##"):
                text += tok[2:]
                continue
            is_cjk = len(tok) == 1 and _is_cjk(ord(tok))
            if text and not (is_cjk or prev_cjk):
                text += " "
            text += tok
            prev_cjk = is_cjk
        return text

    # ---- model input ------------------------------------------------------------------------------------------
    def __call__(self, texts: TextInput, max_length: int = DEFAULT_MAX_LENGTH, padding: str = "max_length",
                 return_tensors: Optional[str] = "pt") -> Dict[str, object]:
        """Model input for one text or a batch.

        Args:
            texts: a ``str`` (a batch of one) or a list/tuple of ``str``.
            max_length: total length including ``[CLS]`` and ``[SEP]``, 2..2048 (48 in the official evaluation).
                Longer texts are truncated to their first ``max_length - 2`` word pieces.
            padding: ``"max_length"`` pads every row to ``max_length`` (the official layout);
                ``"longest"`` pads to the longest row of the batch (after truncation).
            return_tensors: ``"pt"`` (int64 ``torch.Tensor``), ``"np"`` (int64 ``numpy.ndarray``) or ``None``
                (lists of ints).

        Returns:
            ``{"input_ids": [B, L], "attention_mask": [B, L]}``; the mask is 1 on ``[CLS]``, text and ``[SEP]``,
            0 on padding.
        """
        if isinstance(texts, str):
            batch: List[str] = [texts]
        elif isinstance(texts, (list, tuple)):
            batch = list(texts)
            if not batch:
                raise InputError("empty batch: give at least one text")
            for i, t in enumerate(batch):
                self._check_text(t, f"text #{i}")
        else:
            kind = "None" if texts is None else type(texts).__name__
            raise InputError(f"texts must be a str or a list of str, got {kind}")
        self._check_layout_args(max_length, padding, return_tensors)
        return self._model_input(*self._encode_flat(batch), max_length, padding, return_tensors)

    def pad(self, encoded: Sequence[Sequence[int]], max_length: int = DEFAULT_MAX_LENGTH,
            padding: str = "max_length", return_tensors: Optional[str] = "pt") -> Dict[str, object]:
        """Model input from texts already encoded with :meth:`encode` (no special tokens): the same truncation,
        ``[CLS]``/``[SEP]`` and padding as calling the tokenizer on the texts themselves."""
        self._check_layout_args(max_length, padding, return_tensors)
        if not encoded:
            raise InputError("empty batch: give at least one text")
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
        return self._model_input(flat, *self._positions(lengths), lengths, max_length, padding, return_tensors)

    @staticmethod
    def _check_layout_args(max_length: int, padding: str, return_tensors: Optional[str]) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise InputError(f"max_length must be an int, got {type(max_length).__name__}")
        if not 2 <= max_length <= MAX_TEXT_POSITIONS:
            raise InputError(f"max_length must be between 2 and {MAX_TEXT_POSITIONS} (the model's positions), "
                             f"got {max_length}")
        if padding not in ("max_length", "longest"):
            raise InputError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        if return_tensors not in ("pt", "np", None):
            raise InputError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    def _model_input(self, flat: np.ndarray, row_of: np.ndarray, col_of: np.ndarray, lengths: np.ndarray,
                     max_length: int, padding: str, return_tensors: Optional[str]) -> Dict[str, object]:
        """``[CLS] + ids[:max_length - 2] + [SEP]`` per row, padded; ids given flat with their row and column."""
        keep = max_length - 2
        lengths = np.minimum(lengths, keep) + 2
        width = max_length if padding == "max_length" else int(lengths.max())
        input_ids = np.full((len(lengths), width), self.pad_token_id, dtype=np.int64)
        input_ids[:, 0] = self.cls_token_id
        sel = col_of < keep
        input_ids[row_of[sel], col_of[sel] + 1] = flat[sel]
        input_ids[np.arange(len(lengths)), lengths - 1] = self.sep_token_id
        attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if return_tensors == "np":
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        return {"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist()}

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """``[encode(t) for t in texts]``, faster for large batches."""
        texts = list(texts)
        for i, t in enumerate(texts):
            self._check_text(t, f"text #{i}")
        if not texts:
            return []
        flat, row_of, _, lengths = self._encode_flat(texts)
        bounds = np.cumsum(lengths)[:-1].tolist() if len(texts) > 1 else []
        return [part.tolist() for part in np.split(flat, bounds)]

    def _encode_flat(self, texts: List[str]):
        """All ids of all texts in one int64 array, with each id's text index and position, and each text's
        length (ids before truncation)."""
        n = len(texts)
        joined = (" " + _SENTINEL + " ").join(texts)
        if n > 1 and joined.count(_SENTINEL) != n - 1:  # some text holds the separator itself
            chunks = [self.encode(t) for t in texts]
            lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=n)
            flat = np.fromiter(itertools.chain.from_iterable(chunks), dtype=np.int64, count=int(lengths.sum()))
        else:
            words = basic_tokenize(joined, _CLEAN_BATCH) if n > 1 else basic_tokenize(joined)
            # Vectorised lookup: each distinct word once, then gather its ids for every occurrence.
            cache = self._cache
            index: Dict[str, int] = {}
            pieces: List[Tuple[int, ...]] = []
            for w in set(words):
                hit = cache.get(w)
                index[w] = len(pieces)
                pieces.append((-1,) if w == _SENTINEL else (hit[1] if hit is not None else self._wordpiece(w)[1]))
            word_idx = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
            piece_len = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
            piece_ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64,
                                    count=int(piece_len.sum()))
            piece_start = np.cumsum(piece_len) - piece_len
            lens = piece_len[word_idx]
            total = int(lens.sum())
            within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
            flat = piece_ids[np.repeat(piece_start[word_idx], lens) + within]
            marks = np.flatnonzero(flat == -1)
            ends = np.concatenate([marks, [len(flat)]])
            starts = np.concatenate([[0], marks + 1])
            lengths = (ends - starts).astype(np.int64)
            flat = np.delete(flat, marks)
        return (flat, *self._positions(lengths), lengths)

    @staticmethod
    def _positions(lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """For ids laid out flat text after text: each id's text index and its position within its text."""
        row_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        col_of = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets, lengths)
        return row_of, col_of
