"""Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare,
ReduceLogSum, ReduceLogSumExp, and the running sum CumSum.

Every rule first brings the output cotangent (and, where needed, the output) back to the
keepdims=1 form, which broadcasts against the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import as_mask, float_array, normalize_axis


@dataclass(frozen=True)
class _Axes:
    """The reduced axes of a Reduce* node."""

    axes: list[int] | str | None
    """Normalised constant axes, a tensor name (computed axes), or None for all axes."""
    noop: bool = False
    """Empty axes with ``noop_with_empty_axes``: the node is the identity."""


def _reduce_axes(ctx: VJPContext) -> _Axes:
    as_input = ctx.opset >= (13 if ctx.node.op_type == "ReduceSum" else 18)
    axes: list[int] | str | None
    if as_input:
        axes = None
        if ctx.has_input(1):
            constant = ctx.const_ints(1)
            axes = ctx.input(1) if constant is None else constant
    else:
        attr = ctx.attr("axes")
        axes = [int(a) for a in attr] if attr else None
    if isinstance(axes, list) and not axes:
        axes = None
    if axes is None and int(ctx.attr("noop_with_empty_axes", 0)):
        return _Axes(None, noop=True)
    if isinstance(axes, list):
        rank = ctx.rank(ctx.input(0))
        axes = sorted(normalize_axis(a, rank) for a in axes)
    return _Axes(axes)


def _keep_dims(ctx: VJPContext, t: str, axes: _Axes) -> str:
    """A reduced tensor (the output or its cotangent) in keepdims=1 form."""
    if int(ctx.attr("keepdims", 1)) or axes.noop:
        return t
    b = ctx.b
    if axes.axes is None:
        return b.Unsqueeze(t, b.ints(range(ctx.rank(ctx.input(0)))))
    return b.Unsqueeze(t, axes.axes if isinstance(axes.axes, str) else b.ints(axes.axes))


def _sum_kept(ctx: VJPContext, t: str, axes: _Axes) -> str:
    """ReduceSum of ``t`` over the node's axes with keepdims=1."""
    b = ctx.b
    if axes.axes is None:
        return b.ReduceSum(t, keepdims=1)
    axes_input = axes.axes if isinstance(axes.axes, str) else b.ints(axes.axes)
    return b.ReduceSum(t, axes_input, keepdims=1)


def _spread(ctx: VJPContext, gy: Cotangents, allow_noop: bool = True) -> tuple[str, _Axes]:
    """The output cotangent broadcast to the input's shape, and the reduced axes.

    ``allow_noop`` is false for the reductions whose "no-op" form (empty axes with
    noop_with_empty_axes) still applies an undocumented elementwise map (|x| for ReduceL2, x²
    for ReduceSumSquare); such nodes are refused rather than guessed at.
    """
    g = ctx.cotangent(gy)
    axes = _reduce_axes(ctx)
    if axes.noop:
        if not allow_noop:
            raise ctx.error("empty axes with noop_with_empty_axes=1 are not supported")
        return g, axes
    x = ctx.input(0)
    shape = ctx.static_shape(x)
    target = ctx.b.ints(shape) if shape is not None else ctx.b.Shape(x)
    return ctx.b.Expand(_keep_dims(ctx, g, axes), target), axes


def _grads(ctx: VJPContext, dx: str) -> list[str | None]:
    return [dx] + [None] * (len(ctx.node.input) - 1)


def _count(ctx: VJPContext, axes: _Axes) -> str:
    """How many elements each output element reduces, as a scalar in the working type."""
    shape = ctx.static_shape(ctx.input(0))
    if shape is not None and not isinstance(axes.axes, str):
        chosen = range(len(shape)) if axes.axes is None else axes.axes
        return ctx.scalar(float(np.prod([shape[a] for a in chosen])))
    b = ctx.b
    as_float = [b.Cast(b.Size(name), to=ctx.elem_type) for name in (ctx.input(0), ctx.output(0))]
    return b.Div(*as_float)


@vjp("ReduceSum")
def reduce_sum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The cotangent broadcast back over the reduced axes."""
    return _grads(ctx, _spread(ctx, gy)[0])


@vjp("ReduceMean")
def reduce_mean_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The cotangent broadcast back, divided by the number of reduced elements."""
    spread, axes = _spread(ctx, gy)
    return _grads(ctx, spread if axes.noop else ctx.b.Div(spread, _count(ctx, axes)))


@vjp("ReduceMax", "ReduceMin")
def reduce_max_min_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The cotangent goes to the extreme elements; tied extremes share it equally.

    The equal split is the subgradient PyTorch's amax/amin use; the input cotangent still sums
    to the output's.
    """
    spread, axes = _spread(ctx, gy)
    if axes.noop:
        return _grads(ctx, spread)
    b = ctx.b
    hits = as_mask(ctx, b.Equal(ctx.input(0), _keep_dims(ctx, ctx.output(0), axes)))
    share = b.Div(hits, _sum_kept(ctx, hits, axes))
    return _grads(ctx, b.Mul(spread, share))


@vjp("ReduceL1")
def reduce_l1_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = g·sign(x); sign(0) = 0 picks the zero subgradient at the kink."""
    spread, _ = _spread(ctx, gy, allow_noop=False)
    return _grads(ctx, ctx.b.Mul(spread, ctx.b.Sign(ctx.input(0))))


@vjp("ReduceL2")
def reduce_l2_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = g·x/‖x‖; an all-zero slice gets the zero subgradient instead of 0/0."""
    spread, axes = _spread(ctx, gy, allow_noop=False)
    b = ctx.b
    norm = _keep_dims(ctx, ctx.output(0), axes)
    tiny = np.finfo(helper.tensor_dtype_to_np_dtype(ctx.elem_type)).tiny
    safe = b.Max(norm, float_array(ctx, tiny))
    return _grads(ctx, b.Mul(spread, b.Div(ctx.input(0), safe)))


@vjp("ReduceSumSquare")
def reduce_sum_square_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = 2·g·x."""
    spread, _ = _spread(ctx, gy, allow_noop=False)
    twice = ctx.b.Mul(ctx.input(0), ctx.scalar(2.0))
    return _grads(ctx, ctx.b.Mul(spread, twice))


@vjp("ReduceLogSum")
def reduce_log_sum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = g/Σx = g·exp(-y)."""
    spread, axes = _spread(ctx, gy, allow_noop=False)
    b = ctx.b
    inverse_sum = b.Exp(b.Neg(_keep_dims(ctx, ctx.output(0), axes)))
    return _grads(ctx, b.Mul(spread, inverse_sum))


@vjp("ReduceLogSumExp")
def reduce_log_sum_exp_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = g·exp(x - y), the slice's softmax (no overflow: x <= y)."""
    spread, axes = _spread(ctx, gy, allow_noop=False)
    b = ctx.b
    weights = b.Exp(b.Sub(ctx.input(0), _keep_dims(ctx, ctx.output(0), axes)))
    return _grads(ctx, b.Mul(spread, weights))


@vjp("CumSum")
def cumsum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The running sum in the other direction: ``exclusive`` kept, ``reverse`` flipped.

    Each x_j feeds the outputs after it (or from it on), so dx_j sums g over those."""
    g = gy[0]
    assert g is not None
    reverse = 0 if int(ctx.attr("reverse", 0)) else 1
    dx = ctx.b.CumSum(g, ctx.input(1), exclusive=int(ctx.attr("exclusive", 0)), reverse=reverse)
    return [dx, None]
