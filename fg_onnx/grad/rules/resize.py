"""Resize: linear in its input, and separable. Along each resized axis Y = A X for a constant
interpolation matrix A [out, in], so the VJP multiplies the cotangent by A^T axis by axis.

The matrices are built here from static sizes with the float32 coordinate arithmetic that
onnxruntime uses, so that nearest-neighbour picks and edge clamps agree with it exactly; where
sizes (or the scales and sizes inputs) are known only at run time, in the graph
(fg_onnx.grad.rules._resize_matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import float_array, normalize_axis
from fg_onnx.grad.rules._resize_matrix import (
    RunTimeAxis,
    check_run_time_resize,
    run_time_matrix,
)
from fg_onnx.graph.info import Dim

F32 = np.float32


@dataclass(frozen=True)
class _Axis:
    """One resized axis: sizes, the scale used for coordinates, and the crop box (roi)."""

    index: int
    size_in: int
    size_out: int
    scale: float
    roi: tuple[float, float] = (0.0, 1.0)


@vjp("Resize", since=11)
def resize_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = ctx.cotangent(gy)
    if any(ctx.needs[1:]):
        raise ctx.error("roi, scales or sizes that depend on the explained input are not "
                        "supported")
    if int(ctx.attr("antialias", 0)):
        raise ctx.error("antialias=1 is not supported")
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.error(f"unknown mode {mode!r}")
    rank = ctx.rank(ctx.input(0))
    axes = _resized_axes(ctx, rank)
    if axes is None:
        return [_run_time_vjp(ctx, g, mode, rank), None, None, None]
    dx = g
    for axis in axes:
        matrix = _interpolation_matrix(ctx, mode, axis)
        if axis.size_in == axis.size_out and np.array_equal(matrix, np.eye(axis.size_in)):
            continue
        dx = _apply_transposed(ctx, dx, matrix, axis.index, rank)
    return [dx, None, None, None]


def _const_floats(ctx: VJPContext, i: int) -> np.ndarray | None:
    """Input ``i`` when it is a non-empty constant, else None (absent or empty: unused)."""
    if not ctx.has_input(i):
        return None
    value = ctx.const(ctx.input(i))
    if value is None:
        raise ctx.error(f"input {ctx.input(i)!r} must be a constant")
    return None if value.size == 0 else np.asarray(value).reshape(-1)


def _run_time_constant(ctx: VJPContext, i: int) -> bool:
    """Whether input ``i`` is given but known only at run time."""
    return ctx.has_input(i) and ctx.const(ctx.input(i)) is None


def _resized_axes(ctx: VJPContext, rank: int) -> list[_Axis] | None:
    """The axes whose scale is not 1 or whose size changes, with their geometry; None when
    that needs sizes known only at run time."""
    if _run_time_constant(ctx, 2) or _run_time_constant(ctx, 3):
        return None
    axes = [normalize_axis(int(a), rank) for a in ctx.attr("axes", list(range(rank)))]
    scales, sizes = _const_floats(ctx, 2), _const_floats(ctx, 3)
    if scales is None and sizes is None:
        raise ctx.error("neither scales nor sizes is given")
    x_shape, y_shape = ctx.shape(ctx.input(0)), ctx.shape(ctx.output(0))
    in_dims: list[Dim] = list(x_shape) if x_shape is not None else [None] * rank
    out_dims: list[Dim] = list(y_shape) if y_shape is not None else [None] * rank
    roi = _const_floats(ctx, 1)
    cropping = ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    factors = _axis_scales(ctx, axes, scales, sizes, in_dims)
    if factors is None:
        return None
    result = []
    for k, axis in enumerate(axes):
        size_in, scale = in_dims[axis], factors[k]
        box = (float(roi[k]), float(roi[len(axes) + k])) if roi is not None else (0.0, 1.0)
        same_size = sizes is None or size_in == int(sizes[k])
        if scale == 1.0 and same_size and (not cropping or box == (0.0, 1.0)):
            continue  # an untouched axis, possibly of unknown size (batch, channels)
        size_out = out_dims[axis]
        if not isinstance(size_out, int) and isinstance(size_in, int):
            size_out = int(sizes[k]) if sizes is not None else int(F32(size_in) * F32(scale))
        if not isinstance(size_in, int) or not isinstance(size_out, int):
            return None
        result.append(_Axis(axis, size_in, size_out, scale, box))
    return result


def _axis_scales(ctx: VJPContext, axes: list[int], scales: np.ndarray | None,
                 sizes: np.ndarray | None, in_dims: Sequence[Dim]) -> list[float] | None:
    """The float32 scale of each listed axis, as onnxruntime derives it (None: it depends
    on sizes known only at run time)."""
    if scales is not None:
        return [float(F32(s)) for s in scales]
    assert sizes is not None
    dims = [in_dims[a] for a in axes]
    known = [d for d in dims if isinstance(d, int)]
    if len(known) != len(dims):
        return None
    ratios = [float(F32(s) / F32(d)) for s, d in zip(sizes, known, strict=True)]
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "not_larger":
        return [min(ratios)] * len(ratios)
    if policy == "not_smaller":
        return [max(ratios)] * len(ratios)
    return ratios


def _run_time_vjp(ctx: VJPContext, g: str, mode: str, rank: int) -> str:
    """The VJP with interpolation matrices built in the graph from Shape(x) and Shape(y)."""
    check_run_time_resize(ctx, mode)
    dx = g
    for axis in _run_time_axes(ctx, rank):
        dx = _apply_transposed_tensor(ctx, dx, run_time_matrix(ctx, mode, axis), axis.index,
                                      rank)
    return dx


def _run_time_axes(ctx: VJPContext, rank: int) -> list[RunTimeAxis]:
    """Every axis that may be resized, skipping those the graph shows unchanged: a constant
    scale of 1, equal static dims, or leading dims the sizes copy from Shape(x)."""
    b, x, y = ctx.b, ctx.input(0), ctx.output(0)
    axes = [normalize_axis(int(a), rank) for a in ctx.attr("axes", list(range(rank)))]
    scales = ctx.const(ctx.input(2)) if ctx.has_input(2) else None
    by_sizes = ctx.has_input(3) and (ctx.const(ctx.input(3)) is None
                                     or ctx.const(ctx.input(3)).size > 0)  # type: ignore[union-attr]
    x_shape, y_shape = ctx.shape(x), ctx.shape(y)
    kept = _leading_axes_copied(ctx) if by_sizes else 0
    result = []
    for k, axis in enumerate(axes):
        if not by_sizes and scales is not None and float(np.asarray(scales).reshape(-1)[k]) == 1.0:
            continue
        dims = [s[axis] if s is not None else None for s in (x_shape, y_shape)]
        if axis < kept or (dims[0] is not None and dims[0] == dims[1]):
            continue
        size_in, size_out = b.Shape(x, start=axis, end=axis + 1), b.Shape(y, start=axis,
                                                                          end=axis + 1)
        if by_sizes:
            scale = b.Div(b.Cast(size_out, to=TensorProto.FLOAT),
                          b.Cast(size_in, to=TensorProto.FLOAT))
        elif scales is not None:
            scale = b.scalar(float(F32(np.asarray(scales).reshape(-1)[k])), TensorProto.FLOAT)
        else:
            scale = b.Gather(b.Cast(ctx.input(2), to=TensorProto.FLOAT), b.ints([k]))
        result.append(RunTimeAxis(axis, size_in, size_out, scale))
    return result


def _leading_axes_copied(ctx: VJPContext) -> int:
    """How many leading dims the sizes input copies from Shape(x) (the exporters'
    Concat(Shape(x)[:2], new sizes)), which are therefore not resized."""
    producer = ctx.info.producer
    concat = producer.get(ctx.input(3))
    if concat is None or concat.op_type != "Concat" or not concat.input:
        return 0
    head = producer.get(concat.input[0])
    if head is None or head.op_type != "Slice" or len(head.input) not in (3, 4):
        return 0  # (steps, the fifth input, would be something else)
    shape = producer.get(head.input[0])
    if (shape is None or shape.op_type != "Shape" or shape.attribute
            or shape.input[0] != ctx.input(0)):
        return 0
    bounds = [ctx.const(name) for name in head.input[1:]]
    if any(bound is None for bound in bounds):
        return 0
    starts, ends, *axes = ([int(v) for v in np.asarray(bound).reshape(-1)] for bound in bounds)
    if starts != [0] or len(ends) != 1 or (axes and axes[0] != [0]):
        return 0
    return max(ends[0], 0)


def _source_coordinates(ctx: VJPContext, axis: _Axis) -> np.ndarray:
    """x_original for each output index, in float32 like onnxruntime."""
    mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    out = np.arange(axis.size_out, dtype=F32)
    scale, n_in, n_out = F32(axis.scale), F32(axis.size_in), F32(axis.size_out)
    half = F32(0.5)
    transforms: dict[str, Callable[[], np.ndarray]] = {
        "half_pixel": lambda: (out + half) / scale - half,
        "pytorch_half_pixel": lambda: (
            (out + half) / scale - half if axis.size_out > 1 else np.zeros_like(out)
        ),
        "asymmetric": lambda: out / scale,
        "align_corners": lambda: (
            out * (n_in - 1) / (n_out - 1) if axis.size_out > 1 else np.zeros_like(out)
        ),
        "half_pixel_symmetric": lambda: (
            n_in / F32(2) * (F32(1) - n_out / (scale * n_in)) + ((out + half) / scale - half)
        ),
        "tf_crop_and_resize": lambda: _crop_coordinates(axis, out),
    }
    if mode not in transforms:
        raise ctx.error(f"unknown coordinate_transformation_mode {mode!r}")
    return np.asarray(transforms[mode](), dtype=F32)


def _crop_coordinates(axis: _Axis, out: np.ndarray) -> np.ndarray:
    start, end = F32(axis.roi[0]), F32(axis.roi[1])
    last = F32(axis.size_in - 1)
    if axis.size_out > 1:
        return start * last + out * (end - start) * last / F32(axis.size_out - 1)
    return np.full_like(out, F32(0.5) * (start + end) * last)


def _interpolation_matrix(ctx: VJPContext, mode: str, axis: _Axis) -> np.ndarray:
    """A [out, in] with Y = A X along ``axis``; rows of points that tf_crop_and_resize puts
    outside the input are zero (they hold the constant extrapolation_value)."""
    coords = _source_coordinates(ctx, axis)
    n_in = axis.size_in
    matrix = np.zeros((axis.size_out, n_in), dtype=np.float64)
    rows = np.arange(axis.size_out)
    if mode == "nearest":
        picks = _nearest(ctx, coords)
        np.add.at(matrix, (rows, np.clip(picks, 0, n_in - 1)), 1.0)
    elif mode == "linear":
        _add_linear(matrix, coords, n_in)
    else:
        _add_cubic(ctx, matrix, coords, n_in)
    if ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > n_in - 1)
        matrix[outside] = 0.0
    return matrix


def _nearest(ctx: VJPContext, coords: np.ndarray) -> np.ndarray:
    """Input index per output under ``nearest_mode`` (std::round semantics for ties)."""
    wide = coords.astype(np.float64)
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    if nearest_mode == "round_prefer_floor":
        picks = np.where(wide == np.floor(wide) + 0.5, np.floor(wide), np.floor(wide + 0.5))
    elif nearest_mode == "round_prefer_ceil":
        picks = np.floor(wide + 0.5)
    elif nearest_mode == "floor":
        picks = np.floor(wide)
    elif nearest_mode == "ceil":
        picks = np.ceil(wide)
    else:
        raise ctx.error(f"unknown nearest_mode {nearest_mode!r}")
    return picks.astype(np.int64)


def _add_linear(matrix: np.ndarray, coords: np.ndarray, n_in: int) -> None:
    """Two taps at floor(x) and floor(x) + 1 (clamped); at the last input both taps coincide
    and onnxruntime weighs each by 0.5."""
    x = np.clip(coords, F32(0), F32(n_in - 1))
    low = np.minimum(x.astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    w_low = np.abs(x - high.astype(F32)).astype(np.float64)
    w_high = np.abs(x - low.astype(F32)).astype(np.float64)
    same = low == high
    w_low[same], w_high[same] = 0.5, 0.5
    rows = np.arange(len(coords))
    np.add.at(matrix, (rows, low), w_low)
    np.add.at(matrix, (rows, high), w_high)


def _add_cubic(ctx: VJPContext, matrix: np.ndarray, coords: np.ndarray, n_in: int) -> None:
    """Keys cubic convolution over taps floor(x) - 1 .. floor(x) + 2, clamped to the edge or,
    with exclude_outside, dropped and the rest renormalised."""
    a = float(ctx.attr("cubic_coeff_a", -0.75))
    x = coords.astype(np.float64)
    base = np.floor(x)
    s = x - base
    distances = np.stack([s + 1, s, 1 - s, 2 - s], axis=1)
    near = ((a + 2) * distances - (a + 3)) * distances**2 + 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a
    weights = np.where(distances <= 1, near, far)
    taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if int(ctx.attr("exclude_outside", 0)):
        weights = np.where((taps >= 0) & (taps < n_in), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(coords)), 4)
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1).reshape(-1)), weights.reshape(-1))


def _apply_transposed_tensor(ctx: VJPContext, g: str, matrix: str, axis: int, rank: int) -> str:
    """:func:`_apply_transposed` with A [out, in] a tensor of the graph."""
    b = ctx.b
    if axis == rank - 1:
        return b.MatMul(g, matrix)
    if axis == rank - 2:
        return b.MatMul(b.Transpose(matrix, perm=[1, 0]), g)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return b.Transpose(b.MatMul(b.Transpose(g, perm=perm), matrix), perm=perm)


def _apply_transposed(ctx: VJPContext, g: str, matrix: np.ndarray, axis: int, rank: int) -> str:
    """Contracts ``g``'s ``axis`` (length out) with A [out, in]: the result has length in."""
    b = ctx.b
    if axis == rank - 1:
        return b.MatMul(g, float_array(ctx, matrix))
    if axis == rank - 2:
        return b.MatMul(float_array(ctx, matrix.T), g)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    moved = b.MatMul(b.Transpose(g, perm=perm), float_array(ctx, matrix))
    return b.Transpose(moved, perm=perm)
