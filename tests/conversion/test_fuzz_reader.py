"""Property-based fuzzing (hypothesis) of the ``.pdparams`` reader, the whole convert path and the tokenizer.

Mutated valid pickles (byte flips, insertions, deletions, truncations, splices) must either load as a state dict or
raise the project's ``CheckpointError`` family, never anything else, and never hang. Only the stdlib unpickler's
own errors on damaged data become ``CheckpointError``: a bug in the reader surfaces as itself, so this fuzz fails on
it (``tests/conversion/test_reader_errors.py`` plants one to show that). Runs are derandomized and use no example database, so
every CI run tries the same inputs; each test counts the examples it really ran and asserts the count RELIABILITY.md
quotes (the constants below), rather than trusting ``max_examples``.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import signal
from datetime import timedelta
from typing import List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ernievil2torch.config import ErnieViL2Config, TextConfig, VisionConfig
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.errors import CheckpointError, InputError
from ernievil2torch.conversion.pdparams import BIG_PARAM_KEY, STRUCTURE_KEY, load_pdparams
from ernievil2torch.verify.synthetic import layout_state

from helpers import shared_file

READER_EXAMPLES = 10_000
CONVERT_EXAMPLES = 1_000
TOKENIZER_EXAMPLES = 10_000
MUTATIONS_PER_EXAMPLE = (1, 4)  # fewest and most mutations applied to one base pickle
MIN_SURROGATE_TEXTS = 1_000  # of the tokenizer examples, at least this many hold a lone surrogate (asserted)
PER_EXAMPLE_DEADLINE = timedelta(seconds=2)  # hypothesis fails an example slower than this
HANG_GUARD_S = 20  # SIGALRM turns a genuine hang into a test failure instead of a stuck CI job



class Hang(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_GUARD_S):
    def fire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---- base pickles: small, but covering every way a valid .pdparams is spelled ---------------------------------------

def _small_state():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(4, dtype=np.float16),
            "e": rng.standard_normal(5).astype(">f4"), "s": np.float32(2.5)}


def _split(state):
    out = {k: v for k, v in state.items() if k != "w"}
    out["w@@.0"], out["w@@.1"] = state["w"].ravel()[:5], state["w"].ravel()[5:]
    out[BIG_PARAM_KEY] = {"w": {"OriginShape": [3, 4], "slices": ["w@@.0", "w@@.1"]}}
    return out


def _bases() -> List[bytes]:
    state = _small_state()
    with_map = dict(state, **{STRUCTURE_KEY: {k: f"param_{k}" for k in state}})
    bases = [pickle.dumps(with_map, protocol=p) for p in (2, 3, 4, 5)]
    bases.append(pickle.dumps(with_map, protocol=2).replace(b"numpy._core", b"numpy.core"))  # numpy 1.x spelling
    bases.append(pickle.dumps({k: (f"var_{k}", v) for k, v in state.items()}, protocol=4))
    bases.append(pickle.dumps(_split(state), protocol=3))
    bases.append(pickle.dumps({"model": with_map}, protocol=4))
    return bases


BASES = _bases()


def _op_offsets(blob: bytes) -> List[int]:
    return [pos for _, _, pos in pickletools.genops(blob)]


OFFSETS = [_op_offsets(b) for b in BASES]


@st.composite
def mutated(draw, bases=BASES, offsets=OFFSETS) -> bytes:
    """A base pickle with 1-4 mutations; positions are uniform or on an opcode boundary (to hit structure)."""
    index = draw(st.integers(0, len(bases) - 1))
    blob = bytearray(bases[index])
    for _ in range(draw(st.integers(*MUTATIONS_PER_EXAMPLE))):
        if not blob:
            break
        if draw(st.booleans()):
            pos = draw(st.integers(0, len(blob) - 1))
        else:
            pos = min(draw(st.sampled_from(offsets[index])) + draw(st.integers(0, 2)), len(blob) - 1)
        kind = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "truncate", "splice"]))
        if kind == "flip":
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            blob[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("."), ord("R"), ord("b"), ord("("),
                                              ord("t"), ord("u"), ord("h"), ord("q")]))
        elif kind == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del blob[pos:pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del blob[pos:]
        else:  # splice: a slice of another (or the same) base pickle replaces a slice of this one
            other = bases[draw(st.integers(0, len(bases) - 1))]
            start = draw(st.integers(0, len(other) - 1))
            piece = other[start:start + draw(st.integers(1, 64))]
            blob[pos:pos + draw(st.integers(0, 64))] = piece
    return bytes(blob)


def check_state(state) -> None:
    assert isinstance(state, dict) and state
    for name, array in state.items():
        assert isinstance(name, str)
        assert isinstance(array, np.ndarray) and array.dtype.isnative and not array.dtype.hasobject
        assert array.dtype.kind in "biuf"


def test_bases_are_valid():
    expected = _small_state()
    for blob in BASES:
        state = load_pdparams(blob)
        assert set(state) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(state[key], value)


def check_reader_outcome(blob: bytes) -> None:
    """The reader's contract on any input: a valid state dict or ``CheckpointError``, both for bytes (whose size is
    known) and for a stream of unknown length (no size bound, no peek at the header)."""
    for source in (blob, io.BytesIO(blob)):
        with hang_guard():
            try:
                state = load_pdparams(source)
            except CheckpointError:
                continue
        check_state(state)


def test_reader_fuzz():
    outcomes = {"examples": 0, "distinct": set()}

    @settings(max_examples=READER_EXAMPLES, deadline=PER_EXAMPLE_DEADLINE, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(blob=mutated())
    def run(blob):
        outcomes["examples"] += 1
        outcomes["distinct"].add(blob)
        check_reader_outcome(blob)

    run()
    print(f"reader fuzz: {outcomes['examples']} examples, {len(outcomes['distinct'])} distinct inputs")
    assert outcomes["examples"] == READER_EXAMPLES


# ---- the whole convert path -----------------------------------------------------------------------------------------

def _micro_config() -> ErnieViL2Config:
    """The smallest model of the real architecture (one 64-wide head per tower, one layer each)."""
    return ErnieViL2Config(
        text=TextConfig(vocab_size=6, hidden_size=64, num_layers=1, num_heads=1, intermediate_size=8,
                        max_position_embeddings=4),
        vision=VisionConfig(image_size=8, patch_size=4, hidden_size=64, num_layers=1, num_heads=1,
                            intermediate_size=8),
        model_type="ernie_vil_2.0_custom")


@pytest.fixture(scope="module")
def micro_bases():
    state = layout_state(_micro_config(), "official", seed=0, with_classifier_head=False)
    bases = [pickle.dumps(dict(state, **{STRUCTURE_KEY: {k: k for k in state}}), protocol=p) for p in (2, 4)]
    paddlenlp = layout_state(_micro_config(), "paddlenlp", seed=1)
    bases.append(pickle.dumps({k: (k, v) for k, v in paddlenlp.items()}, protocol=4))
    return bases


def test_convert_fuzz(micro_bases, tmp_path_factory):
    from ernievil2torch.modeling import ErnieViL2

    offsets = [_op_offsets(b) for b in micro_bases]
    root = tmp_path_factory.mktemp("convert_fuzz")
    counter = iter(range(10 ** 9))
    outcomes = {"converted": 0, "refused": 0}

    @settings(max_examples=CONVERT_EXAMPLES, deadline=PER_EXAMPLE_DEADLINE * 5, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(blob=mutated(micro_bases, offsets))
    def run(blob):
        work = root / str(next(counter))
        work.mkdir()
        src, dst = work / "m.pdparams", work / "out"
        src.write_bytes(blob)
        with hang_guard():
            try:
                report = convert_checkpoint(src, dst)
            except CheckpointError:
                assert sorted(p.name for p in work.iterdir()) == ["m.pdparams"]
                outcomes["refused"] += 1
                return
            model = ErnieViL2.from_pretrained(dst)
        assert report.tensors == len(model.state_dict())
        assert sorted(p.name for p in work.iterdir()) == ["m.pdparams", "out"]
        outcomes["converted"] += 1

    run()
    print("convert fuzz:", outcomes)
    assert outcomes["converted"] + outcomes["refused"] == CONVERT_EXAMPLES, outcomes
    # both outcomes are common: the mutations neither always break nor always miss the checkpoint
    assert min(outcomes.values()) >= CONVERT_EXAMPLES // 20, outcomes


# ---- tokenizer ------------------------------------------------------------------------------------------------------

LONE_SURROGATES = st.characters(categories=["Cs"])  # hypothesis' text() never draws these on its own

texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.tuples(st.text(max_size=30), LONE_SURROGATES, st.text(max_size=30)).map("".join),
    st.text(alphabet="一只猫的照片赛博朋克 abcXYZ0123$＄.,!?\t\n\u0000\ufffd\u200b\u0301é", max_size=80),
    st.lists(st.text(max_size=40), min_size=0, max_size=4),
    st.lists(st.one_of(st.text(max_size=10), st.none(), st.integers(), st.binary(max_size=10)), max_size=3),
    st.none(), st.integers(), st.binary(max_size=20), st.floats(),
)


@pytest.fixture(scope="module")
def tokenizer():
    from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer

    return ErnieViL2Tokenizer(shared_file("vocab.txt"))


def is_valid_request(text, max_length) -> bool:
    """What the tokenizer's documented contract accepts: a str or a non-empty list of str, and an int max_length
    in 2..2048 (not a bool)."""
    texts_ok = isinstance(text, str) or (isinstance(text, list) and bool(text)
                                         and all(isinstance(t, str) for t in text))
    length_ok = type(max_length) is int and 2 <= max_length <= 2048
    return texts_ok and length_ok


def _has_lone_surrogate(text) -> bool:
    parts = [text] if isinstance(text, str) else text if isinstance(text, list) else []
    return any(isinstance(t, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in parts)


def test_tokenizer_fuzz(tokenizer):
    """Refused exactly when the request breaks the contract; otherwise each row is ``[CLS] + encode(text)[:L-2] +
    [SEP]`` padded with 0 to ``max_length`` (the same ids as encoding the text alone)."""
    outcomes = {"encoded": 0, "refused": 0, "with lone surrogates": 0}

    @settings(max_examples=TOKENIZER_EXAMPLES, deadline=PER_EXAMPLE_DEADLINE, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=texts, max_length=st.one_of(st.just(48), st.integers(-3, 80), st.none()))
    def run(text, max_length):
        outcomes["with lone surrogates"] += _has_lone_surrogate(text)
        with hang_guard():
            try:
                out = tokenizer(text, max_length=max_length)
            except InputError:
                assert not is_valid_request(text, max_length), (text, max_length)
                outcomes["refused"] += 1
                return
        assert is_valid_request(text, max_length), (text, max_length)
        outcomes["encoded"] += 1
        ids, mask = out["input_ids"].tolist(), out["attention_mask"].tolist()
        for row, one in enumerate([text] if isinstance(text, str) else text):
            pieces = tokenizer.encode(one)[:max_length - 2]
            want = [tokenizer.cls_token_id, *pieces, tokenizer.sep_token_id]
            assert ids[row] == want + [tokenizer.pad_token_id] * (max_length - len(want)), (one, max_length)
            assert mask[row] == [1] * len(want) + [0] * (max_length - len(want))

    run()
    print("tokenizer fuzz:", outcomes)
    assert outcomes["encoded"] + outcomes["refused"] == TOKENIZER_EXAMPLES, outcomes
    assert outcomes["with lone surrogates"] >= MIN_SURROGATE_TEXTS, outcomes
    assert min(outcomes["encoded"], outcomes["refused"]) >= TOKENIZER_EXAMPLES // 10, outcomes
