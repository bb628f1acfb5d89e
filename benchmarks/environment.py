"""The machine a benchmark runs on: thread pinning, what the CPU supports, and how the report names the machine.

Every framework of one run works with the same number of threads. OpenMP runtimes read ``OMP_NUM_THREADS`` once,
when they load, and torch's loads on ``import torch``: :func:`pin_threads` therefore restarts a script whose
environment holds another value, before anything is measured.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Dict, Optional, Sequence

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def pin_threads(threads: int, argv: Optional[Sequence[str]]) -> None:
    """Every framework on ``threads`` threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (read by Paddle, the
    PaddleNLP worker and ONNX Runtime's OpenMP) and ``torch.set_num_threads``.

    ``argv`` None means "run as a script": then a process whose ``OMP_NUM_THREADS`` differs replaces itself
    (``os.execve``, same interpreter and arguments) with the variable set. Called with an explicit ``argv`` (from
    a test), it only sets the variables and torch's thread count."""
    wanted = str(threads)
    if argv is None and os.environ.get("OMP_NUM_THREADS") != wanted:
        env = dict(os.environ, OMP_NUM_THREADS=wanted, MKL_NUM_THREADS=wanted)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = wanted
    torch.set_num_threads(threads)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 kernels on this CPU (the bf16 cases and bf16 GEMM ceiling need it)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def inductor_problem() -> str:
    """Why ``torch.compile`` cannot run on this machine ("" when it can)."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
        return ""
    except Exception as exc:  # noqa: BLE001 - no C++ compiler, broken toolchain, ...
        return f"{type(exc).__name__}: {exc}"[:200]


def machine_info(threads: int) -> Dict[str, str]:
    """``{"cpu", "cpus", "flags", "threads", "os"}``: CPU model, logical CPUs, the ISA flags that matter for
    fp32/bf16 GEMMs (of :data:`ISA_FLAGS`, space separated), the threads of the run, the OS."""
    info = {"cpu": platform.processor() or "unknown", "cpus": str(os.cpu_count()), "flags": ""}
    try:
        fields = dict(line.split(":", 1) for line in
                      subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cpus"] = fields.get("CPU(s)", info["cpus"]).strip()
        present = set(fields.get("Flags", "").split())
        info["flags"] = " ".join(f for f in ISA_FLAGS if f in present)
    except OSError:
        pass
    info.update(threads=str(threads), os=platform.platform())
    return info
