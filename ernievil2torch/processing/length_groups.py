"""Length-grouped text batches: no padding paid for texts that are shorter than the longest one of the collection.

Every caller that encodes many texts (``embed --kind text``, ``eval``, ``similarity``, zero-shot prompts, the
service's text micro-batches) goes through :class:`LengthGroupedTexts`: each text is tokenised once, the texts are
ordered by token length (longest first, ties in input order), cut into batches of ``batch_size`` neighbours, and
each batch is padded only to its own longest text (never beyond ``max_length``). :meth:`LengthGroupedTexts.encode`
runs a function over the batches and hands the rows back in input order.

Why it is exact: a padded key gets softmax weight exactly 0 and the text tower trims batch-wide trailing padding
(``modeling/text.py``), so a text's features do not depend on its batch-mates; only float round-off of the GEMMs
(shapes differ) can move them, by ~1e-7 in float32 (``tests/processing/test_length_grouping.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from ..constants import DEFAULT_MAX_LENGTH
from ..errors import InputError
from .tokenizer import ErnieViL2Tokenizer

#: ``fn(input_ids [n, L], attention_mask [n, L]) -> rows [n, ...]`` run on every batch by :meth:`encode`.
BatchFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TextBatch:
    """One batch: the input positions of its texts, their ids and mask ``[n, L]`` (L = its longest text)."""

    positions: List[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class LengthGroupedTexts:
    """Texts tokenised once, grouped by length into batches padded to their own longest (see the module doc).

    Args:
        tokenizer: the tokenizer whose :meth:`~ErnieViL2Tokenizer.encode` and :meth:`~ErnieViL2Tokenizer.pad`
            make the model input (the official ``[CLS] + ids[:max_length - 2] + [SEP]`` layout).
        texts: the texts, in input order (at least one).
        batch_size: texts per batch (> 0).
        max_length: the length cap incl. ``[CLS]``/``[SEP]``; longer texts are truncated as by the tokenizer.
        skip_failures: a text the tokenizer refuses is listed in :attr:`failed` as ``(position, reason)`` and left
            out of the batches, instead of raising (the tokenizer's own error).
    """

    def __init__(self, tokenizer: ErnieViL2Tokenizer, texts: Sequence[str], batch_size: int = 64,
                 max_length: int = DEFAULT_MAX_LENGTH, skip_failures: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(texts) == 0:
            raise InputError("no texts to encode")
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.encoded, self.positions, self.failed = self._tokenize(texts, skip_failures)
        lengths = np.minimum([len(ids) for ids in self.encoded], max_length - 2).astype(np.int64) + 2
        self.order = np.argsort(-lengths, kind="stable")  # longest first: the biggest batch runs first

    def _tokenize(self, texts: Sequence[str], skip_failures: bool
                  ) -> Tuple[List[List[int]], np.ndarray, List[Tuple[int, str]]]:
        """Ids of every text (one pass); with ``skip_failures`` a refused text is recorded instead of raising."""
        texts = list(texts)
        try:
            return self.tokenizer.encode_batch(texts), np.arange(len(texts)), []
        except Exception:
            if not skip_failures:
                raise
        encoded, positions, failed = [], [], []
        for position, text in enumerate(texts):
            try:
                encoded.append(self.tokenizer.encode(text))
                positions.append(position)
            except Exception as exc:  # one bad text fails alone
                failed.append((position, f"{type(exc).__name__}: {exc}"))
        return encoded, np.asarray(positions, dtype=np.int64), failed

    def __len__(self) -> int:
        """The number of batches."""
        return -(-len(self.encoded) // self.batch_size)

    def batches(self) -> Iterator[TextBatch]:
        """The batches, longest texts first; every text that tokenised is in exactly one."""
        for start in range(0, len(self.order), self.batch_size):
            chosen = self.order[start:start + self.batch_size]
            enc = self.tokenizer.pad([self.encoded[i] for i in chosen], max_length=self.max_length,
                                     padding="longest", return_tensors="pt")
            yield TextBatch(self.positions[chosen].tolist(), enc["input_ids"], enc["attention_mask"])

    def restore(self, rows: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-batch results (in :meth:`batches` order) -> one tensor with a row per text that tokenised, in input
        order (a failed text has no row)."""
        joined = torch.cat(list(rows))
        if joined.shape[0] != len(self.order):
            raise ValueError(f"{joined.shape[0]} rows for {len(self.order)} texts")
        inverse = torch.empty(len(self.order), dtype=torch.long)
        inverse[torch.from_numpy(self.order)] = torch.arange(len(self.order))
        return joined[inverse.to(joined.device)]

    def encode(self, fn: BatchFunction) -> torch.Tensor:
        """``fn`` over every batch, rows back in input order: ``encode(fn)[j]`` belongs to the ``j``-th text that
        tokenised (the ``j``-th text overall when none failed)."""
        return self.restore([fn(batch.input_ids, batch.attention_mask) for batch in self.batches()])
