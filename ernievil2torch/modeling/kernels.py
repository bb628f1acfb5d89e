"""Which CPU kernel runs the model's linear layers at inference, per compute dtype.

The fastest GEMM library depends on the CPU: MKL (``F.linear``) leads on some, oneDNN's prepacked linear on others,
and on a CPU without native bf16/fp16 instructions (AVX2 only) a half-precision GEMM runs several times slower than
the same GEMM in fp32. A :class:`KernelChoice` names one kernel per dtype; :mod:`.kernel_choice` makes it once per
machine by measurement. The model runs its choice inside :func:`kernel_scope`.

Kernels, by name (:data:`KERNELS`):

* ``reference``: ``F.linear`` / ``torch.addmm`` in the tensors' dtype, the code path of every release so far; its
  output is bit-identical to a model that has no choice at all.
* ``onednn`` (fp32 only): oneDNN's ``mkldnn::_linear_pointwise`` on a weight reordered once into oneDNN's blocked
  layout; an activation after it (the text MLP's exact GELU, the ViT's SiLU) runs in place on its output, not as
  oneDNN's post-op (see :func:`_onednn`). Within 1e-5 of ``reference``.
* ``fp32`` (bf16/fp16 only): the GEMM computed in fp32 from the half-precision operands (exactly representable),
  the result rounded back to the tensors' dtype; the other ops stay in half precision.

Only inference takes a chosen kernel: where autograd records (training, ``autograd_paths``), or where a layer is not
a plain ``nn.Linear`` (a LoRA adapter wraps it), the module is called as always, so gradients, adapters and gradient
checkpointing never meet these kernels (oneDNN's op has no autograd formula at all). A reordered weight is cached
with the identity and the version counter of the weight it came from, and rebuilt when either changes (an
optimizer step, ``load_state_dict``, a merged adapter, ``.to()``): it can never go stale.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

REFERENCE_KERNEL = "reference"
#: Kernel names and the dtypes each serves.
KERNELS: Dict[str, Tuple[str, ...]] = {
    REFERENCE_KERNEL: ("float32", "bfloat16", "float16"),
    "onednn": ("float32",),
    "fp32": ("bfloat16", "float16"),
}
DTYPE_FIELDS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class KernelChoice:
    """The linear-layer kernel per compute dtype (names from :data:`KERNELS`); the default is all ``reference``."""

    float32: str = REFERENCE_KERNEL
    bfloat16: str = REFERENCE_KERNEL
    float16: str = REFERENCE_KERNEL

    def __post_init__(self) -> None:
        for field, name in asdict(self).items():
            if name not in KERNELS or field not in KERNELS[name]:
                usable = ", ".join(k for k, dtypes in KERNELS.items() if field in dtypes)
                raise InputError(f"kernel {name!r} cannot run {field} linear layers (usable: {usable})")

    def for_dtype(self, dtype: torch.dtype) -> str:
        """The kernel of ``dtype``; ``reference`` for a dtype the choice does not cover."""
        field = DTYPE_FIELDS.get(dtype)
        return getattr(self, field) if field else REFERENCE_KERNEL

    def as_dict(self) -> Dict[str, str]:
        return asdict(self)

    def spec(self) -> str:
        """The ``ERNIEVIL2_KERNELS`` spelling of this choice, e.g. ``float32=onednn,bfloat16=fp32,float16=fp32``."""
        return ",".join(f"{k}={v}" for k, v in asdict(self).items())

    def summary(self) -> str:
        return "linear kernels: " + ", ".join(f"{k} {v}" for k, v in asdict(self).items())


REFERENCE = KernelChoice()

_ACTIVE = threading.local()


@contextlib.contextmanager
def kernel_scope(choice: Optional[KernelChoice]) -> Iterator[None]:
    """Run the linear layers called in this block (this thread) with ``choice``; None keeps the outer choice."""
    previous = getattr(_ACTIVE, "choice", REFERENCE)
    _ACTIVE.choice = previous if choice is None else choice
    try:
        yield
    finally:
        _ACTIVE.choice = previous


def active_kernels() -> KernelChoice:
    """The choice of the innermost :func:`kernel_scope` of this thread (``REFERENCE`` outside any)."""
    return getattr(_ACTIVE, "choice", REFERENCE)


def onednn_usable() -> bool:
    """Whether this torch build has oneDNN on CPU (the ``onednn`` kernel's requirement)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_PACKED_ATTR = "_ernievil2_packed"


def packed_weight(owner: nn.Module, weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``weight * scale`` (``weight`` or a view of it) in oneDNN's blocked layout, cached on ``owner``.

    The cache key is the scale and the weight's storage address, shape, strides, offset and version counter (views
    share their base's counter, which every in-place update bumps): a changed weight misses the cache and is
    reordered again. Entries of an older version are dropped when a new one is stored, so the cache holds at most one
    copy per view and scale. A weight made under ``torch.inference_mode`` has no version counter: it is reordered
    on each call instead.
    """
    def make(w: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(w if scale == 1.0 else w * scale)
    if weight.is_inference():  # no version counter to key on: reordered on every call, never cached
        return make(weight)
    cache: Dict[tuple, Tuple[int, torch.Tensor]] = owner.__dict__.setdefault(_PACKED_ATTR, {})
    slot = (scale, weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape),
            weight.stride(), weight.dtype)
    version = weight._version
    hit = cache.get(slot)
    if hit is not None and hit[0] == version:
        return hit[1]
    with torch.no_grad():
        packed = make(weight.detach())
    stale = [key for key, (v, _) in cache.items() if v != version]
    for key in stale:
        del cache[key]
    cache[slot] = (version, packed)
    return packed


def _onednn(owner: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            weight_scale: float = 1.0) -> torch.Tensor:
    """``x @ (weight_scale * weight).T + bias`` by oneDNN, the plain GEMM without a post-op.

    The callers apply an activation in place on this fresh output (``aten::gelu_``, ``aten::silu_``) instead of
    asking oneDNN for its post-op, on purpose: on an AVX2 CPU (AMD EPYC, 2 threads, 15 paired calls) the exact-GELU
    post-op made ``fc1`` of a 32 x 48-token text batch 32 % slower (72.4 against 54.9 ms) and the SiLU ("swish")
    post-op the ViT's ``fc1`` 33 % slower (76.1 against 57.4 ms), where one separate in-place pass costs 2-3 %
    (56.8 and 58.9 ms)."""
    x = x.contiguous()  # oneDNN reads dense rows; a no-op except for the [CLS] row view
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight(owner, weight, weight_scale), bias, "none", [], "")


def _fp32(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


def chosen_kernel(x: torch.Tensor) -> str:
    """The kernel the active choice gives tensors of ``x``'s dtype and device: ``reference`` off the CPU, under CPU
    autocast (whose casts the reference ops carry) and while ``torch.compile`` / ``torch.export`` trace (the
    compiler makes its own kernel choices from the reference graph)."""
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return REFERENCE_KERNEL
    return active_kernels().for_dtype(x.dtype)


def linear(owner: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (then the exact GELU when ``gelu``) with the active inference kernel.

    ``owner`` is the module the weight belongs to (it holds the reordered copy). The caller decides that this is
    an inference call on a plain ``nn.Linear``'s weight (or a view of it); see the module docstring.
    """
    kernel = chosen_kernel(x)
    if kernel == "onednn" and x.dtype == torch.float32:
        out = _onednn(owner, x, weight, bias)
        return torch.ops.aten.gelu_(out) if gelu else out
    out = _fp32(x, weight, bias) if kernel == "fp32" else F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def scaled_silu_linear(owner: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       weight_scale: float, bias_scale: float, silu: bool) -> torch.Tensor:
    """``x @ (a W).T + c b``, then SiLU when ``silu`` (a = ``weight_scale``, c = ``bias_scale``), with the oneDNN
    kernel: ``a W`` is reordered once (cached like any reordered weight) and SiLU runs in place on the GEMM's
    output, so QuickGELU's slope costs no pass over the activations (see :meth:`~.layers.MLP.forward`). The caller
    checks :func:`folds_scales` first."""
    out = _onednn(owner, x, weight, None if bias is None else bias * bias_scale, weight_scale)
    return torch.ops.aten.silu_(out) if silu else out


def folds_scales(x: torch.Tensor) -> bool:
    """Whether the active kernel for ``x`` is the fp32 ``onednn`` kernel, so :func:`scaled_silu_linear` can run."""
    return x.dtype == torch.float32 and chosen_kernel(x) == "onednn"


def scaled_addmm(bias: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, beta: float,
                 alpha: float) -> torch.Tensor:
    """``torch.addmm(bias, rows, weight.t(), beta=beta, alpha=alpha)`` (the half-precision MLP's folded
    scalings) with the active kernel: ``fp32`` computes it in fp32 and rounds back, anything else as written."""
    if chosen_kernel(rows) == "fp32":
        out = torch.addmm(bias.float(), rows.float(), weight.float().t(), beta=beta, alpha=alpha)
        return out.to(rows.dtype)
    return torch.addmm(bias, rows, weight.t(), beta=beta, alpha=alpha)

