"""This machine's inference kernels, chosen once by measurement and cached; an environment variable overrides.

:func:`resolve_kernels` answers "which :class:`~.kernels.KernelChoice` runs here": ``ERNIEVIL2_KERNELS`` when set,
else the entry of ``$XDG_CACHE_HOME/ernievil2torch/kernels.json`` (``~/.cache/...`` without XDG) for this machine's
key (CPU model, usable cores, torch version: the three things that decide which GEMM library wins), else a fresh
:func:`measure_kernels` (a few seconds, once), stored under that key.

The measurement times every usable kernel of each dtype on one whole block of each tower at the model's size (a ViT
block on two images' tokens, an ERNIE block on eight 48-token texts), as the model runs them: LayerNorms,
attention, the MLP with its activation and whatever a kernel folds into it. Lone GEMMs mislead: on an AMD EPYC
(AVX2, 2 threads) oneDNN led MKL by 10 % on an isolated ``fc1`` yet ran the text tower 8 % slower, and a
GEMM-only timing cannot see the ViT MLP's QuickGELU fold at all. Kernels alternate within each round,
the best of each is kept, the sum over both blocks decides. A kernel other than ``reference`` must be at least
:data:`MIN_GAIN` faster to be chosen: within noise the reference keeps results bit-identical to a model without a
choice.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..config import ErnieViL2Config, base_config, canonical_dtype
from ..constants import KERNELS_ENV
from ..errors import InputError
from ..storage.atomic import atomic_write_bytes
from .kernels import DTYPE_FIELDS, KERNELS, REFERENCE, REFERENCE_KERNEL, KernelChoice, kernel_scope, onednn_usable
from .text import TextBlock
from .vision import VisionBlock

ENV_VAR = KERNELS_ENV
CACHE_NAME = "kernels.json"
#: A non-reference kernel is chosen only when this much faster (noise on a shared machine is a few per cent).
MIN_GAIN = 1.05
#: After a round, a lead this large ends the measurement of a dtype (a half-precision GEMM without native
#: instructions runs several times slower: more rounds would only cost seconds).
DECISIVE = 1.5
#: The measured inputs: (tower, sequences, tokens each). Two images (2 x 197 tokens) and eight 48-token texts: sizes
#: where each kernel runs at its steady rate, small enough that the slow half-precision candidates cost seconds.
PROBES: Tuple[Tuple[str, int, int], ...] = (("image", 2, 197), ("text", 8, 48))


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/ernievil2torch/kernels.json``, or ``~/.cache/ernievil2torch/kernels.json``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ernievil2torch" / CACHE_NAME


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_key() -> str:
    """``CPU model | N cores | torch VERSION``: what the cache is keyed by."""
    return f"{_cpu_model()} | {_cores()} cores | torch {torch.__version__}"


def parse_kernels(spec: str) -> KernelChoice:
    """``"reference"`` or ``"DTYPE=KERNEL[,DTYPE=KERNEL...]"`` (dtype spellings as everywhere: fp32, bf16, ...;
    unnamed dtypes keep ``reference``) -> :class:`KernelChoice`; :class:`InputError` for anything else."""
    text = spec.strip()
    if text.lower() == REFERENCE_KERNEL:
        return REFERENCE
    fields: Dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, kernel = part.partition("=")
        if not sep:
            raise InputError(f"kernel spec {spec!r}: expected 'reference' or DTYPE=KERNEL pairs separated by "
                             f"commas, e.g. 'float32=onednn,bfloat16=fp32' (kernels: {', '.join(KERNELS)})")
        fields[canonical_dtype(name)] = kernel.strip().lower()
    if not fields:
        raise InputError(f"kernel spec {spec!r} names no kernel")
    return KernelChoice(**fields)


@dataclass
class KernelMeasurement:
    """What :func:`measure_kernels` timed: GFLOP/s per dtype and kernel (the best round of each block, summed over
    both towers' blocks) and the resulting choice."""

    choice: KernelChoice
    gflops: Dict[str, Dict[str, float]] = field(default_factory=dict)
    threads: int = 1

    def summary(self) -> str:
        rows = [f"{dtype}: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items())
                for dtype, rates in self.gflops.items()]
        return "\n".join([f"kernel measurement ({self.threads} threads)", *rows, self.choice.summary()])


def _candidates(dtype_name: str) -> List[str]:
    names = [k for k, dtypes in KERNELS.items() if dtype_name in dtypes]
    return [k for k in names if k != "onednn" or onednn_usable()]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (a reordered weight is built here, as on a model's first call)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


Probe = Tuple[Callable[[], torch.Tensor], float]  # one block's inference call on its input, FLOPs of that call


def block_flops(hidden: int, intermediate: int, sequences: int, tokens: int) -> float:
    """Matrix-product FLOPs of one transformer block call: the four linear layers and the two attention products."""
    rows = sequences * tokens
    return 2.0 * rows * hidden * (4 * hidden + 2 * intermediate) + 4.0 * sequences * tokens * tokens * hidden


def _probes(config: ErnieViL2Config, dtype: torch.dtype, generator: torch.Generator) -> List[Probe]:
    """One block of each tower in ``dtype`` (made outside inference mode, as a model's parameters are, so reordered
    weights are cached) called on its input, per :data:`PROBES`."""
    probes = []
    for tower, sequences, tokens in PROBES:
        cfg = config.vision if tower == "image" else config.text
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
            block = (VisionBlock(cfg) if tower == "image" else TextBlock(cfg)).to(dtype).eval()
        x = torch.randn(sequences, tokens, cfg.hidden_size, generator=generator).to(dtype)
        call = partial(block, x) if tower == "image" else partial(block, x, None)  # the text block takes a mask
        probes.append((call, block_flops(cfg.hidden_size, cfg.intermediate_size, sequences, tokens)))
    return probes


def measure_kernels(config: Optional[ErnieViL2Config] = None, rounds: int = 5, repeats: int = 2,
                    dtypes: Sequence[torch.dtype] = tuple(DTYPE_FIELDS)) -> KernelMeasurement:
    """Time each usable kernel of each dtype on one block of each tower of ``config`` (default the released
    model's), kernels alternating within each round, and choose per dtype (the fastest by :data:`MIN_GAIN`, else
    ``reference``)."""
    config = config or base_config()
    generator = torch.Generator().manual_seed(0)
    fields: Dict[str, str] = {}
    rates: Dict[str, Dict[str, float]] = {}
    for dtype in dtypes:
        name = DTYPE_FIELDS[dtype]
        kernels = _candidates(name)
        probes = _probes(config, dtype, generator)
        flops = sum(f for _, f in probes)
        best = {k: [float("inf")] * len(probes) for k in kernels}
        with torch.no_grad():
            for _ in range(rounds):
                for kernel in kernels:
                    with kernel_scope(KernelChoice(**{name: kernel})):
                        for i, (call, _) in enumerate(probes):
                            seconds = _time(call, repeats)
                            best[kernel][i] = min(best[kernel][i], seconds)
                totals = sorted(sum(v) for v in best.values())
                if len(totals) > 1 and totals[1] >= DECISIVE * totals[0]:
                    break  # no noise reverses such a gap: spare the slow kernel's further rounds
        totals = {k: sum(v) for k, v in best.items()}
        rates[name] = {k: flops / t / 1e9 for k, t in totals.items()}
        fastest = min(totals, key=totals.get)
        if totals[fastest] * MIN_GAIN <= totals[REFERENCE_KERNEL]:
            fields[name] = fastest
    return KernelMeasurement(KernelChoice(**fields), rates, torch.get_num_threads())


def _read_cache(path: Path) -> Dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: measured again and rewritten
    return data if isinstance(data, dict) else {}


def cached_kernels(key: Optional[str] = None) -> Optional[KernelChoice]:
    """The cached choice of ``key`` (default this machine's), or None when there is none (or it is unusable)."""
    entry = _read_cache(cache_path()).get(key or machine_key())
    try:
        return KernelChoice(**entry["choice"])
    except (TypeError, KeyError, InputError):
        return None


def store_kernels(measurement: KernelMeasurement, key: Optional[str] = None) -> Path:
    """Record ``measurement`` under ``key`` (default this machine's) in the cache file, keeping other machines'
    entries (a home folder shared by several machines); written atomically. Returns the file's path."""
    path = cache_path()
    data = _read_cache(path)
    data[key or machine_key()] = {"choice": measurement.choice.as_dict(), "gflops": measurement.gflops,
                                  "threads": measurement.threads,
                                  "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def resolve_kernels(spec: str = "auto") -> KernelChoice:
    """The kernels to run: ``spec`` itself unless it is ``"auto"`` (:func:`parse_kernels`); for ``"auto"``,
    ``$ERNIEVIL2_KERNELS`` when set (itself ``auto`` or a spec), else this machine's cached choice, else a fresh
    :func:`measure_kernels`, cached. :class:`InputError` for a bad spec, naming where it came from."""
    if spec.strip().lower() != "auto":
        return parse_kernels(spec)
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env.lower() != "auto":
        try:
            return parse_kernels(env)
        except InputError as exc:
            raise InputError(f"${ENV_VAR}: {exc}") from None
    cached = cached_kernels()
    if cached is not None:
        return cached
    measurement = measure_kernels()
    try:
        store_kernels(measurement)
    except OSError:
        pass  # a read-only home: the choice holds for this process and is measured again next time
    return measurement.choice


@dataclass
class KernelReport:
    """This machine's kernels and where they come from (``source``: ``environment``, ``cache`` or ``measured``)."""

    choice: KernelChoice
    source: str
    machine: str
    cache: Path
    measurement: Optional[KernelMeasurement] = None

    def summary(self) -> str:
        where = {"environment": f"${ENV_VAR}", "cache": f"cached in {self.cache}",
                 "measured": f"measured now, cached in {self.cache}"}[self.source]
        lines = [f"machine: {self.machine}", f"{self.choice.summary()} ({where})",
                 f"set {ENV_VAR}={self.choice.spec()} elsewhere to compute with the same kernels"]
        if self.measurement is not None:
            lines.insert(1, self.measurement.summary())
        return "\n".join(lines)


def kernel_report(measure: bool = False) -> KernelReport:
    """Show this machine's CPU inference kernels: the choice every command uses and where it comes from.

    The choice is made once per machine by timing the candidate kernels on one block of each tower and cached
    under the user's cache folder; the ERNIEVIL2_KERNELS environment variable overrides it (reference, or pairs
    such as float32=onednn,bfloat16=fp32).

    Args:
        measure: time the candidates again now and replace this machine's cached choice (a few seconds; run it
            on a quiet machine, a loaded one may choose otherwise).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env.lower() != "auto" and not measure:
        return KernelReport(resolve_kernels(), "environment", machine_key(), cache_path())
    cached = None if measure else cached_kernels()
    if cached is not None:
        return KernelReport(cached, "cache", machine_key(), cache_path())
    measurement = measure_kernels()
    store_kernels(measurement)
    return KernelReport(measurement.choice, "measured", machine_key(), cache_path(), measurement)


def kernel_record(choice: KernelChoice, dtype: torch.dtype, device: Union[str, torch.device] = "cpu") -> Dict[str, str]:
    """The run-record entry of a resumable command computing in ``dtype`` with ``choice``: ``{"kernels":
    "DTYPE=KERNEL"}`` (the ``ERNIEVIL2_KERNELS`` spelling, so a refused resume shows what to set), or nothing for
    the reference kernel, so that records written before the choice existed still match the same computation.

    A resume whose choice differs is refused like any other changed setting: features or validation scores
    computed half with one kernel and half with another would no longer be one run's."""
    kernel = choice.for_dtype(dtype)
    if kernel == REFERENCE_KERNEL or torch.device(device).type != "cpu":  # the choice is for CPU inference only
        return {}
    return {"kernels": f"{DTYPE_FIELDS[dtype]}={kernel}"}


__all__ = ["KernelReport", "kernel_report", "kernel_record", "ENV_VAR", "KernelMeasurement", "cache_path", "cached_kernels", "machine_key", "measure_kernels",
           "PROBES", "block_flops", "parse_kernels", "resolve_kernels", "store_kernels", "REFERENCE"]
