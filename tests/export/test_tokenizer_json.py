"""``tokenizer.json`` of the open_clip package (``ernievil2torch.export.tokenizer_json``) run by the ``tokenizers``
library itself: the same words as our tokenizer's basic pass, character by character and on random texts, and the
same ids on the tokenizer suite's corpus. ``test_open_clip.py`` checks the same file through open_clip.
"""
from __future__ import annotations

import json
import random
import unicodedata

import pytest

from ernievil2torch.errors import InputError
from ernievil2torch.export.charsmap import precompiled_charsmap
from ernievil2torch.export.registry import export_model
from ernievil2torch.export.tokenizer_json import tables, tokenizer_json
from ernievil2torch.processing import ErnieViL2Tokenizer
from ernievil2torch.processing.tokenizer import basic_tokenize

from helpers import require_module, shared_file

tokenizers = require_module("tokenizers")


@pytest.fixture(scope="module")
def real():
    ours = ErnieViL2Tokenizer(shared_file("vocab.txt"))
    tok = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(ours.vocab)))
    tok.encode_special_tokens = True  # what the package's split_special_tokens asks transformers for
    return ours, tok


def _words(tok, text):
    return [word for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def test_the_character_map_maps_each_key_and_nothing_else():
    mapping = {"A": "a", "É": "e", "\U0002F800": "丽", "Σ": "σ", "\u2028": " "}
    normalizer = tokenizers.normalizers.Precompiled(precompiled_charsmap(mapping))
    assert normalizer.normalize_str("xAÉ\U0002F800Σ\u2028b") == "xae丽σ b"
    assert normalizer.normalize_str("zzz") == "zzz"
    with pytest.raises(ValueError):
        precompiled_charsmap({"": "x"})


def test_every_bmp_character_and_a_sample_of_the_others_give_our_words(real):
    _, tok = real
    code_points = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF] + list(range(0x10000, 0x110000, 61))
    wrong = [hex(cp) for cp in code_points if _words(tok, chr(cp)) != basic_tokenize(chr(cp))]
    assert not wrong, wrong[:20]


def test_a_mapped_letter_before_any_bmp_character_gives_our_words(real):
    """"É" (two bytes, mapped to "e") then any character: the pairs a per-grapheme lookup under 6 bytes could merge."""
    _, tok = real
    wrong = [hex(cp) for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF
             and _words(tok, "É" + chr(cp)) != basic_tokenize("É" + chr(cp))]
    assert not wrong, wrong[:20]


def test_a_mapped_letter_before_any_astral_grapheme_extender_gives_our_words(real):
    """A mapped one-byte letter ("A") then an extender beyond the BMP (emoji skin tones U+1F3FB-U+1F3FF, the
    marks of the other planes): five bytes, a pair the per-grapheme lookup would take whole, which the BMP sweeps
    above cannot reach."""
    _, tok = real
    extenders = [cp for cp in range(0x10000, 0x110000)
                 if unicodedata.category(chr(cp)) in ("Mc", "Me", "Mn")] + list(range(0x1F3FB, 0x1F400))
    wrong = [hex(cp) for cp in extenders for letter in "AÉ"
             if _words(tok, letter + chr(cp)) != basic_tokenize(letter + chr(cp))]
    assert not wrong, wrong[:20]


def test_special_tokens_have_token_type_zero(real):
    """The exported BERT has one token-type row (ERNIE-ViL has no segments): every id, [CLS] and [SEP] included,
    must get type 0, or a Hugging Face caller passing token_type_ids would index past it."""
    _, tok = real
    encoding = tok.encode("一只猫，在草地上。")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert set(encoding.type_ids) == {0}


def test_the_hard_cases_give_our_words(real):
    _, tok = real
    cases = [
        "ΟΔΟΣ ΑΣ Σ ΑΣ. Σa ΑΣ'Β",     # final sigma: by word end, through case-ignorable punctuation
        "A\u20dd É\u0903 Ａ\u0488\u0489",  # a mapped letter and a spacing/enclosing mark: one grapheme cluster
        "\u0488\u0489abc", "\u20dd\u0488x", "É\u0489 ǅ\u0488",  # marks at the start, two-byte marks
        "cafe\u0301 \u0301x \u0345Σ",  # marks of their own (Mn): dropped; U+0345 is case-ignorable
        "İstanbul ǅemal ß ẞ", "한국어 가\u11a8",  # special casing, Hangul
        "\u0b94\u0bcb \U0001d160 \U00011938",  # longer forms (U+11938, Unicode 13, is not in tokenizers' NFD tables)
        "\U0002b820\U0002b91f\U0002b920 \uf900\U0002f800", "a\u2028b\u2029c\u00a0d\u3000e",  # CJK E, separators
        "\U000e0001x\U000f0000y\ue000z\u200bw", "[CLS] [sep]",  # tags, private use, format chars, specials
    ]
    for text in cases:
        assert _words(tok, text) == basic_tokenize(text), text


def test_random_texts_give_our_words_and_ids(real):
    ours, tok = real
    rng = random.Random(5)
    assigned = [cp for cp in range(0x30000) if not 0xD800 <= cp <= 0xDFFF]
    texts = ["".join(chr(rng.choice(assigned)) for _ in range(rng.randint(1, 8))) for _ in range(4000)]
    assert [t for t in texts if _words(tok, t) != basic_tokenize(t)] == []
    assert [t for t, e in zip(texts, tok.encode_batch(texts)) if e.ids != [1, *ours.encode(t), 2]] == []


def test_the_tables_come_from_python_unicodedata():
    t = tables()
    assert 0x2B820 in t.isolated and 0x2B81F in t.isolated and 0x2CEB0 not in t.isolated  # BERT's blocks
    assert 0xE000 in t.dropped and 0xE0001 in t.dropped and 0x0378 in t.dropped  # private use, tags, unassigned
    assert 0x3000 in t.to_space and 0x2028 not in t.to_space  # Zs to space; U+2028 (Zl) is the charmap's
    assert t.charmap["\u2028"] == " " and t.charmap["Σ"] == "σ" and t.charmap["\uf900"] == "豈"
    assert "\u0301" not in t.charmap and 0x0301 in t.marks and "\u20dd" in t.marks_out
    assert {"\U0001d165", "\U0001d16d", "\u302e"} <= set(t.reordered)  # non-Mn, combining class above 0
    assert all(unicodedata.category(ch) != "Mn" and unicodedata.combining(ch) for ch in t.reordered)


def test_a_vocab_that_holds_a_reorderable_mark_is_refused_before_any_work(model_folder, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "a", "\U0001d165"]) + "\n",
                     encoding="utf-8")
    with pytest.raises(InputError, match="combining"):
        export_model("open_clip", str(model_folder("tiny", 8, None)), str(tmp_path / "out"), vocab=str(vocab))
    assert not (tmp_path / "out").exists()
