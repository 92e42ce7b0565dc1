"""How the augmented graph computes in float16 (AugmentOptions.precision).

The network and its backward pass run in float16; everything they are reduced to (per-sample
totals, per-layer map terms, the outputs) is finished in float32, because a float16 sum
overflows at 65504. Small gradients would underflow float16 (below 6e-5 it loses precision,
below 6e-8 it is zero), so the backward pass starts from ``gradient_scale`` times the one-hot
seed, as mixed-precision training scales its loss; the outputs divide it out again, and the
map needs no correction: each of its terms is normalised.
"""

from __future__ import annotations

import math

from onnx import TensorProto

from fg_onnx.choices import PRECISIONS
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.aggregate import per_sample, per_sample_sum
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.float16 import HALF_MAX

DEFAULT_GRADIENT_SCALE = 256.0
"""Gradients of a logit are rarely above 1 per element: 2⁸ leaves them 256× headroom below
float16's maximum and moves values down to 2e-7 into its normal range."""


def check_precision(precision: str, gradient_scale: float | None) -> float:
    """The gradient scale to use (1 for float32); raises FgOnnxError on bad settings."""
    if precision not in PRECISIONS:
        raise FgOnnxError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if gradient_scale is None:
        return DEFAULT_GRADIENT_SCALE if precision == "float16" else 1.0
    if precision != "float16":
        raise FgOnnxError("--gradient-scale applies to --precision float16 only")
    if not math.isfinite(gradient_scale) or gradient_scale <= 0:
        raise FgOnnxError(f"the gradient scale must be a positive number, got {gradient_scale}")
    if gradient_scale > HALF_MAX:
        raise FgOnnxError(f"the gradient scale must be at most {HALF_MAX:.0f}, float16's largest "
                          f"number, got {gradient_scale:g}")
    return float(gradient_scale)


class Numerics:
    """Builds the float32 ends of a float16 graph; in float32 mode every step is a no-op."""

    def __init__(self, b: GraphBuilder, elem: int, half: bool, gradient_scale: float) -> None:
        """``elem`` is the model's float type; ``half`` turns float16 mode on."""
        self.b, self.half, self.scale = b, half, gradient_scale
        self.elem = TensorProto.FLOAT if half else elem
        """The element type of the float32 ends (the model's own type in float32 mode)."""
        self.float32: set[str] = set()
        """Tensors the float16 conversion must leave in float32 (fg_onnx.graph.float16)."""

    def wide(self, tensor: str) -> str:
        """``tensor`` as float32 (float16 mode), for the computations that follow."""
        if not self.half:
            return tensor
        wide = self.b.Cast(tensor, to=TensorProto.FLOAT)
        self.float32.add(wide)
        return wide

    def descale(self, wide: str) -> str:
        """A float32 (:meth:`wide`) tensor that is linear in the seed, without the scale."""
        if self.scale == 1.0:
            return wide
        return self.b.Mul(wide, self.b.scalar(1.0 / self.scale, self.elem))

    def unscaled(self, tensor: str) -> str:
        """A tensor of the backward pass (linear in the seed) as float32, without the scale."""
        return self.descale(self.wide(tensor))

    def channel_sums(self, tensor: str, axes: list[int]) -> str:
        """Σ of ``tensor`` over ``axes`` (keepdims=0). In float16 mode a mean over the last
        of them first, then a float32 sum: a sum over a whole layer can overflow float16, its
        mean can underflow it, the mean of one row (about as large as its elements) neither."""
        b = self.b
        if not self.half:
            return b.reduce("ReduceSum", tensor, axes, keepdims=0)
        last = axes[-1]
        rows = self.wide(b.reduce("ReduceMean", tensor, [last], keepdims=1))
        length = b.Gather(b.Shape(tensor), b.ints([last]))
        return b.Mul(b.reduce("ReduceSum", rows, axes, keepdims=0), b.Cast(length, to=self.elem))

    def sample_total(self, tensor: str, batch: str) -> str:
        """Σ over everything but the batch, [N]. In float16 mode the sum is a float32 mean
        times the count: a mean cannot overflow, and onnxruntime accumulates it in float32."""
        b = self.b
        if not self.half:
            return per_sample_sum(b, tensor, batch)
        rows, count = per_sample(b, tensor, batch)
        total = self.wide(b.reduce("ReduceMean", rows, [1], keepdims=0))
        return b.Mul(total, b.Cast(count, to=self.elem))
