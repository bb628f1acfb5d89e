"""``ernievil2 convert`` converts in a process where ``import torch`` fails: building the command table, parsing and
checking the arguments and converting import no torch (the loaded result equals an in-process conversion)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.storage.model_dir import read_model_dir
from ernievil2torch.verify.synthetic import write_synthetic_pdparams, write_synthetic_vocab

REPO = Path(__file__).resolve().parents[2]

# Loaded by the interpreter at start-up (sitecustomize on PYTHONPATH): any import of torch fails and is recorded,
# and at exit the shim writes what was attempted and whether torch ended up in sys.modules.
TORCH_BLOCKER = '''
import atexit, json, os, sys

attempts = []

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())

@atexit.register
def report():
    with open(os.environ["TORCH_BLOCKER_REPORT"], "w") as handle:
        json.dump({"attempts": attempts, "loaded": "torch" in sys.modules}, handle)
'''


def blocked_env(tmp_path: Path) -> dict:
    """Environment of a Python process that cannot import torch (the shim reports to tmp_path/report.json)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(TORCH_BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO)]),
            "TORCH_BLOCKER_REPORT": str(tmp_path / "report.json")}


def report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "report.json").read_text())


def run_blocked(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``ernievil2 ARGV`` (the console entry point's code) where importing torch fails."""
    return subprocess.run([sys.executable, "-c", "from ernievil2torch.cli import main; main()", *argv], cwd=tmp_path,
                          env=blocked_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_the_shim_blocks_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import torch"], cwd=tmp_path, env=blocked_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "ImportError: torch is blocked in this test" in proc.stderr
    assert report(tmp_path) == {"attempts": ["torch"], "loaded": False}


def test_convert_runs_where_torch_cannot_be_imported(tmp_path):
    src = write_synthetic_pdparams(tmp_path / "tiny.pdparams", tiny_config(), "official", seed=5)
    vocab = write_synthetic_vocab(tmp_path / "vocab.txt")
    proc = run_blocked(tmp_path, "convert", "--src", str(src), "--dst", str(tmp_path / "out"), "--vocab", str(vocab),
                       "--dtype", "bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layout detected : official" in proc.stdout
    assert report(tmp_path) == {"attempts": [], "loaded": False}

    convert_checkpoint(src, tmp_path / "reference", dtype="bfloat16")
    config, tensors = read_model_dir(tmp_path / "out")
    reference_config, reference = read_model_dir(tmp_path / "reference")
    assert config == reference_config and tensors.keys() == reference.keys()
    for name, tensor in tensors.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, reference[name]), name
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == vocab.read_bytes()


def test_the_help_of_the_console_and_of_convert_imports_no_torch(tmp_path):
    proc = run_blocked(tmp_path, "convert", "--help")
    assert proc.returncode == 0 and "--dtype" in proc.stdout
    proc = run_blocked(tmp_path, "--help")
    assert proc.returncode == 0 and "finetune" in proc.stdout
    assert report(tmp_path) == {"attempts": [], "loaded": False}
