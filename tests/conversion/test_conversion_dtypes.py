"""The torch-free converter: numpy casts give torch's bits, every --dtype round-trips, torch is never imported,
the background hash is the file's sha256."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint, save_pdparams
from ernievil2torch.conversion.dtypes import bf16_bits_to_float32, cast, float32_to_bf16_bits
from ernievil2torch.storage.model_dir import read_model_dir
from ernievil2torch.verify.synthetic import layout_state, random_state

TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def awkward_values() -> np.ndarray:
    """Ties at bf16 and fp16 precision, subnormals, overflow to inf, signed zeros, infinities, random values."""
    rng = np.random.default_rng(0)
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exact bf16 halfway points
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-45, 3.4e38, -3.39e38, 65504.0, 65520.0, 6e-8,
                        1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11], np.float32)
    return np.concatenate([ties, -ties, special, rng.standard_normal(4096).astype(np.float32) * 10.0 ** rng.integers(
        -8, 8, 4096)]).astype(np.float32)


def torch_bits(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


@pytest.mark.parametrize("source", ["F32", "F64", "F16", "BF16"])
@pytest.mark.parametrize("target", ["F32", "F16", "BF16"])
def test_numpy_casts_give_torchs_bits(source, target):
    values = awkward_values()
    if source == "F64":
        array = values.astype(np.float64) * (1 + 2 ** -30)  # digits beyond float32: double rounding matters
        reference = torch.from_numpy(array)
    elif source == "F16":
        with np.errstate(over="ignore"):
            array = values.astype(np.float16)
        reference = torch.from_numpy(array)
    elif source == "BF16":
        array = torch_bits(torch.from_numpy(values).to(torch.bfloat16))
        reference = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        array, reference = values, torch.from_numpy(values)
    ours = cast(array, target)
    expected = torch_bits(reference.to(TORCH[target]))
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert np.array_equal(ours.view(np.uint8), expected.view(np.uint8))


def test_nan_stays_nan_and_bf16_round_trips():
    values = np.array([np.nan, -np.nan, 1.5, -2.0], np.float32)
    bits = float32_to_bf16_bits(values)
    back = bf16_bits_to_float32(bits)
    assert np.isnan(back[:2]).all() and back[2:].tolist() == [1.5, -2.0]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    return save_pdparams(layout_state(tiny_config(), "official", seed=3),
                         tmp_path_factory.mktemp("dtypes") / "tiny.pdparams")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "keep"])
def test_every_output_dtype_holds_the_weights(tiny_file, tmp_path, dtype):
    report = convert_checkpoint(tiny_file, tmp_path / "out", dtype=dtype)
    assert report.sha256 == hashlib.sha256(tiny_file.read_bytes()).hexdigest()
    _, state = read_model_dir(tmp_path / "out")
    want_dtype = torch.float32 if dtype == "keep" else getattr(torch, dtype)
    expected = {k: torch.from_numpy(v).to(want_dtype) for k, v in random_state(tiny_config(), seed=3).items()}
    assert set(state) == set(expected)
    for name, tensor in state.items():
        assert tensor.dtype == want_dtype and torch.equal(tensor, expected[name]), name


def test_bf16_source_kept_as_bf16(tmp_path):
    state = {k: torch_bits(torch.from_numpy(v).to(torch.bfloat16))
             for k, v in layout_state(tiny_config(), "official", seed=4).items()}
    src = save_pdparams(state, tmp_path / "bf16.pdparams")
    convert_checkpoint(src, tmp_path / "out", dtype="keep")
    _, converted = read_model_dir(tmp_path / "out")
    expected = random_state(tiny_config(), seed=4)
    for name, tensor in converted.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, torch.from_numpy(expected[name]).to(torch.bfloat16)), name


def test_the_converter_never_imports_torch(tiny_file, tmp_path):
    script = ("import sys\nfrom ernievil2torch.cli import convert\n"
              f"convert(src={str(tiny_file)!r}, dst={str(tmp_path / 'out')!r})\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
