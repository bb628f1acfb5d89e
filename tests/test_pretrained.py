"""``load_pretrained``: a vocab that does not fit the model is refused with the reason, not an IndexError later."""
from __future__ import annotations

import pytest

from ernievil2torch import load_pretrained
from ernievil2torch.errors import InputError

FITTING_VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + list("一只猫狗的照片")


def test_a_vocab_larger_than_the_word_embedding_is_refused(model_folder):
    folder = model_folder("tiny", seed=3, vocab="synthetic")  # 40000 tokens; the tiny model has 120 rows
    with pytest.raises(InputError, match=r"token ids up to 39999, but the model's word embedding has 120 rows"):
        load_pretrained(folder)


def test_a_vocab_within_the_word_embedding_loads(model_folder):
    loaded = load_pretrained(model_folder("tiny", seed=3, vocab=FITTING_VOCAB))
    ids = loaded.require_tokenizer()(["一只猫"], max_length=8)["input_ids"]
    assert max(max(row) for row in ids) < loaded.model.config.text.vocab_size
