"""Resize's interpolation matrices built in the graph, for axes whose sizes are known only at
run time (fg_onnx.grad.rules.resize builds them as constants where sizes are static).

Along a resized axis Y = A X with A [out, in]; the rows of A come from each output index's
source coordinate, computed here with onnxruntime's float32 arithmetic, in the same order of
operations as the static matrices, so that nearest picks and edge clamps agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import TensorProto

from fg_onnx.grad.registry import VJPContext

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
RUN_TIME_MODES = ("nearest", "linear")
RUN_TIME_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners",
                       "half_pixel_symmetric")


@dataclass(frozen=True)
class RunTimeAxis:
    """One resized axis: its index, its sizes ([1] int64 tensors) and its float32 scale."""

    index: int
    size_in: str
    size_out: str
    scale: str


def check_run_time_resize(ctx: VJPContext, mode: str) -> None:
    """Refuses, in one line, what the run-time matrices do not cover."""
    if mode not in RUN_TIME_MODES:
        raise ctx.error(f"mode {mode!r} at run-time sizes is not supported (give the input "
                        "size, e.g. with --input-size HxW)")
    transform = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if transform not in RUN_TIME_TRANSFORMS:
        raise ctx.error(f"coordinate_transformation_mode {transform!r} at run-time sizes is "
                        "not supported (give the input size, e.g. with --input-size HxW)")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.error("keep_aspect_ratio_policy at run-time sizes is not supported (give "
                        "the input size, e.g. with --input-size HxW)")


def run_time_matrix(ctx: VJPContext, mode: str, axis: RunTimeAxis) -> str:
    """A [out, in] in the node's working type: Y = A X along ``axis``."""
    b = ctx.b
    coords = _source_coordinates(ctx, axis)
    columns = b.Unsqueeze(_range(ctx, axis.size_in), b.ints([0]))  # [1, in]
    last = b.Sub(axis.size_in, b.ints([1]))
    if mode == "nearest":
        picks = b.Min(b.Max(_nearest(ctx, coords), b.ints([0])), last)
        matrix = _one_hot(ctx, picks, columns)
    else:
        matrix = _linear(ctx, coords, columns, last)
    return matrix if ctx.elem_type == FLOAT else b.Cast(matrix, to=ctx.elem_type)


def _range(ctx: VJPContext, size: str) -> str:
    """0 .. size − 1 as int64 [size]."""
    b = ctx.b
    return b.Range(b.const(0, dtype="int64"), b.Squeeze(size, b.ints([0])),
                   b.const(1, dtype="int64"))


def _float(ctx: VJPContext, value: float) -> str:
    return ctx.b.scalar(value, FLOAT)


def _source_coordinates(ctx: VJPContext, axis: RunTimeAxis) -> str:
    """x_original [out] (float32) of each output index, as onnxruntime computes it."""
    b = ctx.b
    mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    out = b.Cast(_range(ctx, axis.size_out), to=FLOAT)
    n_in, n_out = b.Cast(axis.size_in, to=FLOAT), b.Cast(axis.size_out, to=FLOAT)
    half, one = _float(ctx, 0.5), _float(ctx, 1.0)
    if mode == "asymmetric":
        return b.Div(out, axis.scale)
    if mode == "align_corners":
        # (a one-row output takes row 0; the Max keeps its unused quotient finite)
        aligned = b.Div(b.Mul(out, b.Sub(n_in, one)), b.Max(b.Sub(n_out, one), one))
        return b.Where(b.Greater(n_out, one), aligned, _float(ctx, 0.0))
    centred = b.Sub(b.Div(b.Add(out, half), axis.scale), half)
    if mode == "pytorch_half_pixel":
        return b.Where(b.Greater(n_out, one), centred, _float(ctx, 0.0))
    if mode == "half_pixel_symmetric":
        shrink = b.Sub(one, b.Div(n_out, b.Mul(axis.scale, n_in)))
        return b.Add(b.Mul(b.Div(n_in, _float(ctx, 2.0)), shrink), centred)
    return centred  # half_pixel


def _nearest(ctx: VJPContext, coords: str) -> str:
    """Input index [out] (int64) under ``nearest_mode``; ties as std::round resolves them,
    read from the exact fractional part (x + 0.5 would round in float32)."""
    b = ctx.b
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    if nearest_mode == "ceil":
        return b.Cast(b.Ceil(coords), to=INT64)
    low = b.Floor(coords)
    if nearest_mode == "floor":
        return b.Cast(low, to=INT64)
    fraction = b.Sub(coords, low)
    if nearest_mode == "round_prefer_floor":
        up = b.Greater(fraction, _float(ctx, 0.5))
    elif nearest_mode == "round_prefer_ceil":
        up = b.GreaterOrEqual(fraction, _float(ctx, 0.5))
    else:
        raise ctx.error(f"unknown nearest_mode {nearest_mode!r}")
    return b.Add(b.Cast(low, to=INT64), b.Cast(up, to=INT64))


def _one_hot(ctx: VJPContext, picks: str, columns: str) -> str:
    """[out, in] float32 with 1 at (o, picks[o])."""
    b = ctx.b
    return b.Cast(b.Equal(b.Unsqueeze(picks, b.ints([1])), columns), to=FLOAT)


def _linear(ctx: VJPContext, coords: str, columns: str, last: str) -> str:
    """Two taps at floor(x) and floor(x) + 1 (clamped); where both are the last input,
    onnxruntime weighs each by 0.5 (the rows still sum to one)."""
    b = ctx.b
    x = b.Max(b.Min(coords, b.Cast(last, to=FLOAT)), _float(ctx, 0.0))
    low = b.Min(b.Cast(x, to=INT64), last)
    high = b.Min(b.Add(low, b.ints([1])), last)
    w_low = b.Abs(b.Sub(x, b.Cast(high, to=FLOAT)))
    w_high = b.Abs(b.Sub(x, b.Cast(low, to=FLOAT)))
    same = b.Equal(low, high)
    w_low = b.Where(same, _float(ctx, 0.5), w_low)
    w_high = b.Where(same, _float(ctx, 0.5), w_high)
    low_part = b.Mul(_one_hot(ctx, low, columns), b.Unsqueeze(w_low, b.ints([1])))
    high_part = b.Mul(_one_hot(ctx, high, columns), b.Unsqueeze(w_high, b.ints([1])))
    return b.Add(low_part, high_part)
