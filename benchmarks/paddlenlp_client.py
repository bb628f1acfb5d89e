"""The benchmark's side of ``benchmarks/paddlenlp_worker.py``: PaddleNLP's ``ErnieViLModel`` timed in a worker
process under the PaddleNLP interpreter (its numpy 1.x cannot share a process with ours).

Protocol: the worker loads the weights and inputs written here, writes its features, prints ``ready``; then for
each stdin line ``image`` / ``text`` it runs one call of that tower and prints ``done``; ``quit`` ends it.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np

from repo import ROOT

from ernievil2torch.config import ErnieViL2Config


class PaddleNLPWorker:
    """One worker process on ``state`` (our layout; written in PaddleNLP's) and the inputs ``pixels`` / ``ids``,
    with ``threads`` OpenMP/MKL threads. ``image_features`` / ``text_features``: its features on those inputs.
    Raises ``RuntimeError`` (with the end of the worker's log) when the worker answers anything unexpected."""

    def __init__(self, python: str, workdir: Path, cfg: ErnieViL2Config, state: Dict[str, np.ndarray],
                 pixels: np.ndarray, ids: np.ndarray, threads: int) -> None:
        from ernievil2torch.conversion.layouts import LAYOUTS, to_layout

        np.savez(workdir / "state.npz", **to_layout(state, LAYOUTS["paddlenlp"], cfg))
        (workdir / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
        np.savez(workdir / "inputs.npz", pixel_values=pixels, input_ids=ids)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.stderr = open(workdir / "worker.log", "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "paddlenlp_worker.py"), "--params", str(workdir / "state.npz"),
             "--config", str(workdir / "config.json"), "--inputs", str(workdir / "inputs.npz"),
             "--out", str(workdir / "features.npz")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1, env=env)
        self._expect("ready")
        with np.load(workdir / "features.npz") as z:
            self.image_features, self.text_features = z["image_features"], z["text_features"]

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.stderr.seek(0)
            raise RuntimeError(f"PaddleNLP worker said {line!r}, expected {word!r}: {self.stderr.read()[-800:]}")

    def call(self, tower: str) -> None:
        """One timed call of ``tower`` ("image" or "text") in the worker."""
        self.proc.stdin.write(tower + "\n")
        self._expect("done")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.stderr.close()


def paddlenlp_version(python: str) -> str:
    """"paddlenlp X, paddlepaddle Y" of the worker's interpreter ("" when it cannot import them)."""
    code = "import paddlenlp, paddle; print(f'paddlenlp {paddlenlp.__version__}, paddlepaddle {paddle.__version__}')"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
