"""Checkpoint ops: how one of our tensors is made from one or more tensors of another layout, and back.

Each op is a small immutable object with three methods that must agree with one another:

* ``source_shapes(target_shape, n)``: the shapes its ``n`` sources must have for it to produce ``target_shape``;
* ``apply(arrays)``: the sources (their layout) -> our array;
* ``invert(array, n)``: our array -> the ``n`` sources, so that ``apply(invert(a, n)) == a`` exactly.

Adding an op touches only this module. They work on numpy arrays (the converter never needs torch for the math)
and return C-contiguous arrays that own or view their data without surprises for the writer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]


class Op:
    """Base class; see the module docstring for the contract of the three methods."""

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        raise NotImplementedError

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        raise NotImplementedError


@dataclass(frozen=True)
class Copy(Op):
    """The tensor as it is."""

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        return [tuple(target_shape)]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(arrays[0])

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        return [array.copy()]


@dataclass(frozen=True)
class Transpose(Op):
    """A 2-D transpose: Paddle stores ``nn.Linear.weight`` as [in, out], torch as [out, in]."""

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        return [tuple(reversed(target_shape))]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(arrays[0].T)

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        return [np.ascontiguousarray(array.T)]


@dataclass(frozen=True)
class Concat(Op):
    """Sources of equal shape stacked along axis 0 (biases of a q|k|v fusion; torch-layout weights)."""

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        return [(target_shape[0] // n, *target_shape[1:])] * n

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays, axis=0)

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        return [part.copy() for part in np.split(array, n, axis=0)]


@dataclass(frozen=True)
class FuseLinear(Op):
    """Paddle-layout Linear weights [in, out] transposed and stacked as rows: separate q, k, v -> one fused qkv."""

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        rows, cols = target_shape
        return [(cols, rows // n)] * n

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([a.T for a in arrays], axis=0)

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        return [np.ascontiguousarray(part.T) for part in np.split(array, n, axis=0)]


@dataclass(frozen=True)
class Squeeze(Op):
    """Drop ``lead`` leading 1-dims: the official ViT stores [1, 197, 768] where we keep [197, 768]."""

    lead: int = 1

    def source_shapes(self, target_shape: Shape, n: int) -> List[Shape]:
        return [(1,) * self.lead + tuple(target_shape)]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(arrays[0].reshape(arrays[0].shape[self.lead:]))

    def invert(self, array: np.ndarray, n: int) -> List[np.ndarray]:
        return [array.reshape((1,) * self.lead + array.shape).copy()]


COPY, TRANSPOSE, CONCAT, FUSE_LINEAR = Copy(), Transpose(), Concat(), FuseLinear()
