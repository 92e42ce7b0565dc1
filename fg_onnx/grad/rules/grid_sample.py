"""Spatial-transformer sampling: GridSample (4-D, bilinear or nearest, every padding mode,
with onnxruntime's coordinates) and AffineGrid.

Each output pixel is a weighted sum of at most four input pixels (one for nearest), picked by
the grid: the image's cotangent is a scatter-add of the weighted output cotangents into those
pixels, and the grid's (bilinear only; nearest is piecewise constant in it) is the derivative
of the weights. The pixels and weights are computed in the graph from the grid, as
onnxruntime's kernel computes them: the grid is mapped to pixel coordinates (align_corners),
rounded for nearest, clamped (border) or reflected (reflection) into the image, and
out-of-image corners read zero (zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import as_mask, zeros_like
from fg_onnx.grad.rules.shape import shape_of

LINEAR_MODES = ("bilinear", "linear")
NEAREST_MODE = "nearest"


@dataclass(frozen=True)
class _Corner:
    """One input pixel read by every output pixel: its flat index into H*W (int64 [N, 1, P]),
    whether it lies in the image (a 0/1 mask; None where padding keeps every read inside)
    and the weight it enters with ([N, 1, P], zero outside)."""

    index: str
    inside: str | None
    weight: str


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of the sampling: the pixel coordinate (in the image after padding,
    [N, 1, P]), its derivative with respect to the grid value, and the image's size there."""

    coordinate: str
    slope: str
    size: str


class _Sampler:
    """The corners and weights of one GridSample node, built in the graph."""

    def __init__(self, ctx: VJPContext) -> None:
        self.ctx, self.b = ctx, ctx.b
        self.align = bool(int(ctx.attr("align_corners", 0)))
        self.padding = str(ctx.attr("padding_mode", "zeros"))
        self.linear = str(ctx.attr("mode", "linear")) in LINEAR_MODES
        self.row_weights: tuple[str, str] = ("", "")
        self.column_weights: tuple[str, str] = ("", "")
        """Bilinear: the weights of the pixel below and above, along each axis."""
        grid = ctx.input(1)
        # Output pixels flattened: [N, Ho, Wo, 1] -> [N, 1, P]; grid[..., 0] is the width axis.
        self.width = self._axis(self._grid_part(grid, 0), self._size(3))
        self.height = self._axis(self._grid_part(grid, 1), self._size(2))

    def _grid_part(self, grid: str, i: int) -> str:
        b = self.b
        part = b.Slice(grid, b.ints([i]), b.ints([i + 1]), b.ints([3]))
        return b.Reshape(part, b.ints([0, 1, -1]))

    def _size(self, axis: int) -> str:
        x, b = self.ctx.input(0), self.b
        shape = self.ctx.shape(x)
        dim = shape[axis] if shape is not None else None
        if isinstance(dim, int):
            return self.ctx.scalar(float(dim))
        return b.Cast(b.Shape(x, start=axis, end=axis + 1), to=self.ctx.elem_type)

    def _axis(self, normalized: str, size: str) -> _Axis:
        b, s = self.b, self.ctx.scalar
        shifted = b.Add(normalized, s(1.0))
        if self.align:  # [-1, 1] -> [0, size - 1]
            scale = b.Mul(b.Sub(size, s(1.0)), s(0.5))
            coordinate = b.Mul(shifted, scale)
        else:  # [-1, 1] -> [-0.5, size - 0.5]
            scale = b.Mul(size, s(0.5))
            coordinate = b.Mul(b.Sub(b.Mul(shifted, size), s(1.0)), s(0.5))
        if not self.linear:
            coordinate = b.Round(coordinate)  # nearbyint: halves to even, as Round
        if self.padding == "border":
            last = b.Sub(size, s(1.0))
            inside = b.Mul(as_mask(self.ctx, b.GreaterOrEqual(coordinate, s(0.0))),
                           as_mask(self.ctx, b.LessOrEqual(coordinate, last)))
            return _Axis(b.Max(b.Min(coordinate, last), s(0.0)), b.Mul(scale, inside), size)
        if self.padding == "reflection":
            reflected, sign = self._reflected(coordinate, size)
            return _Axis(reflected, b.Mul(scale, sign), size)
        return _Axis(coordinate, scale, size)

    def _reflected(self, coordinate: str, size: str) -> tuple[str, str]:
        """The coordinate folded into [lo, lo + span] by reflections at both ends (a triangle
        wave), and its slope (±1)."""
        b, s = self.b, self.ctx.scalar
        lo = 0.0 if self.align else -0.5
        span = b.Sub(size, s(1.0)) if self.align else size
        offset = b.Sub(coordinate, s(lo))
        period = b.Mul(span, s(2.0))
        folded = b.Mod(b.Abs(offset), period, fmod=1)
        beyond = as_mask(self.ctx, b.Greater(folded, span))  # on the way back
        back = b.Mul(beyond, b.Sub(period, b.Mul(folded, s(2.0))))
        reflected = b.Add(b.Add(folded, back), s(lo))
        sign = b.Mul(b.Sign(offset), b.Sub(s(1.0), b.Mul(beyond, s(2.0))))
        return reflected, sign

    def corner(self, row: str, column: str, weight: str) -> _Corner:
        """The pixel at integral (row, column), clamped into the image; outside a zero-padded
        image its weight is zero."""
        b, s, ctx = self.b, self.ctx.scalar, self.ctx
        inside = None
        if self.padding == "zeros":
            for value, axis in ((row, self.height), (column, self.width)):
                within = b.Mul(as_mask(ctx, b.GreaterOrEqual(value, s(0.0))),
                               as_mask(ctx, b.LessOrEqual(value, b.Sub(axis.size, s(1.0)))))
                inside = within if inside is None else b.Mul(inside, within)
            weight = b.Mul(weight, inside)
        clamped = [b.Max(b.Min(value, b.Sub(axis.size, s(1.0))), s(0.0))
                   for value, axis in ((row, self.height), (column, self.width))]
        flat = b.Add(b.Mul(clamped[0], self.width.size), clamped[1])
        return _Corner(b.Cast(flat, to=TensorProto.INT64), inside, weight)

    def corners(self) -> list[_Corner]:
        """Nearest: the one picked pixel. Bilinear: the four around the point, in the order
        (top-left, top-right, bottom-left, bottom-right)."""
        if not self.linear:
            one = self.b.Add(zeros_like(self.ctx, self.width.coordinate), self.ctx.scalar(1.0))
            return [self.corner(self.height.coordinate, self.width.coordinate, one)]
        (top, bottom), (up, down) = self.bracket(self.height)
        (left, right), (west, east) = self.bracket(self.width)
        self.row_weights, self.column_weights = (up, down), (west, east)
        b = self.b
        return [self.corner(top, left, b.Mul(up, west)), self.corner(top, right, b.Mul(up, east)),
                self.corner(bottom, left, b.Mul(down, west)),
                self.corner(bottom, right, b.Mul(down, east))]

    def bracket(self, axis: _Axis) -> tuple[tuple[str, str], tuple[str, str]]:
        """The integral coordinates below and above the point, and their weights."""
        b, s = self.b, self.ctx.scalar
        below = b.Floor(axis.coordinate)
        above_weight = b.Sub(axis.coordinate, below)
        return (below, b.Add(below, s(1.0))), (b.Sub(s(1.0), above_weight), above_weight)


@vjp("GridSample", since=16)
def grid_sample_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Image: weighted cotangents added at the sampled pixels; grid: the weights' slopes.

    The grid's cotangent (bilinear) is the cotangent times the weights' derivative; nearest
    sampling is piecewise constant in the grid."""
    g = gy[0]
    assert g is not None
    mode = str(ctx.attr("mode", "linear"))
    if mode not in (*LINEAR_MODES, NEAREST_MODE):
        raise ctx.error(f"mode={mode!r} is not supported; export with bilinear or nearest "
                        "sampling")
    if ctx.rank(ctx.input(0)) != 4:
        raise ctx.error("only 4-D GridSample (2 spatial axes) is supported")
    sampler = _Sampler(ctx)
    corners = sampler.corners()
    b = ctx.b
    g_flat = b.Reshape(g, b.ints([0, 0, -1]))  # [N, C, P]
    dx = _image_cotangent(ctx, g_flat, corners) if ctx.needs[0] else None
    dgrid = None
    if ctx.needs[1] and sampler.linear:
        dgrid = _grid_cotangent(ctx, sampler, g_flat, corners)
    elif ctx.needs[1]:
        dgrid = zeros_like(ctx, ctx.input(1))
    return [dx, dgrid]


def _image_cotangent(ctx: VJPContext, g_flat: str, corners: list[_Corner]) -> str:
    b, x = ctx.b, ctx.input(0)
    updates = b.Concat(*(b.Mul(g_flat, c.weight) for c in corners), axis=2)
    index = b.Concat(*(c.index for c in corners), axis=2)
    image = b.Reshape(zeros_like(ctx, x), b.ints([0, 0, -1]))  # [N, C, H*W]
    summed = b.ScatterElements(image, b.Expand(index, b.Shape(updates)), updates, axis=2,
                               reduction="add")
    return b.Reshape(summed, shape_of(ctx, x))


def _grid_cotangent(ctx: VJPContext, sampler: _Sampler, g_flat: str,
                    corners: list[_Corner]) -> str:
    """dy/d column = wy0 (p01 - p00) + wy1 (p11 - p10) and its row counterpart, each summed
    over channels against the cotangent and scaled by d coordinate / d grid."""
    b = ctx.b
    image = b.Reshape(ctx.input(0), b.ints([0, 0, -1]))
    pixels = []
    for c in corners:
        value = b.GatherElements(image, b.Expand(c.index, b.Shape(g_flat)), axis=2)
        pixels.append(value if c.inside is None else b.Mul(value, c.inside))
    p00, p01, p10, p11 = pixels
    up, down = sampler.row_weights
    west, east = sampler.column_weights
    by_column = b.Add(b.Mul(up, b.Sub(p01, p00)), b.Mul(down, b.Sub(p11, p10)))
    by_row = b.Add(b.Mul(west, b.Sub(p10, p00)), b.Mul(east, b.Sub(p11, p01)))
    parts = []
    for derivative, axis in ((by_column, sampler.width), (by_row, sampler.height)):
        summed = b.ReduceSum(b.Mul(g_flat, derivative), b.ints([1]), keepdims=1)
        parts.append(b.Mul(summed, axis.slope))  # [N, 1, P]
    grid = ctx.input(1)
    last_one = b.Concat(b.Shape(grid, end=3), b.ints([1]), axis=0)
    return b.Concat(*(b.Reshape(p, last_one) for p in parts), axis=3)


@vjp("AffineGrid", since=20)
def affine_grid_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dtheta = gᵀ @ base, for grid = base @ thetaᵀ with base the points' (x, y, 1).

    base is built from the identity transform's grid and a column of ones."""
    g = gy[0]
    assert g is not None
    b, size = ctx.b, ctx.input(1)
    size_shape = ctx.static_shape(size)
    if size_shape is None:
        raise ctx.error("the length of the size input is unknown")
    spatial = size_shape[0] - 2
    identity = ctx.b.const(np.eye(spatial, spatial + 1, dtype=_np_type(ctx))[None])
    one_sample = b.Concat(b.ints([1]), b.Slice(size, b.ints([1]), b.ints([spatial + 2])), axis=0)
    points = b.Reshape(b.AffineGrid(identity, one_sample,
                                    align_corners=int(ctx.attr("align_corners", 0))),
                       b.ints([-1, spatial]))
    ones = b.Add(zeros_like(ctx, b.Slice(points, b.ints([0]), b.ints([1]), b.ints([1]))),
                 ctx.scalar(1.0))
    base = b.Concat(points, ones, axis=1)  # [P, spatial + 1]
    per_point = b.Transpose(b.Reshape(g, b.ints([0, -1, spatial])), perm=[0, 2, 1])
    return [b.MatMul(per_point, base), None]


def _np_type(ctx: VJPContext) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(ctx.elem_type))
