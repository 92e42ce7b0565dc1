"""Helpers shared by the VJP rules: broadcasting, zeros, masks, conv and pool geometry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import helper

from fg_onnx.grad.registry import VJPContext
from fg_onnx.graph.info import Shape


def _static_reduce_axes(x_shape: Shape, y_shape: Shape) -> list[int] | None:
    """Axes of y to sum so that y's shape becomes x's, or None when shapes do not tell."""
    lead = len(y_shape) - len(x_shape)
    if lead < 0:
        return None
    axes = list(range(lead))
    for i, x_dim in enumerate(x_shape):
        y_dim = y_shape[lead + i]
        if x_dim == y_dim:
            continue
        if x_dim == 1:
            axes.append(lead + i)
        elif isinstance(x_dim, int) and isinstance(y_dim, int):
            return None  # inconsistent shapes: let the dynamic path decide at run time
        else:
            return None
    return axes


def unbroadcast(ctx: VJPContext, g: str, x: str, y: str) -> str:
    """Sums cotangent ``g`` (shaped like ``y``) down to the shape of the broadcast input ``x``."""
    x_shape, y_shape = ctx.shape(x), ctx.shape(y)
    if x_shape is not None and y_shape is not None:
        axes = _static_reduce_axes(x_shape, y_shape)
        if axes is not None:
            if not axes:
                return g
            lead = len(y_shape) - len(x_shape)
            summed = ctx.b.ReduceSum(g, ctx.b.ints(axes), keepdims=1)
            return ctx.b.Squeeze(summed, ctx.b.ints(range(lead))) if lead else summed
    return _dynamic_unbroadcast(ctx, g, x, y)


def _dynamic_unbroadcast(ctx: VJPContext, g: str, x: str, y: str) -> str:
    b = ctx.b
    lead = ctx.rank(y) - ctx.rank(x)
    x_dims = b.Shape(x)
    padded = b.Concat(b.ints([1] * lead), x_dims, axis=0) if lead else x_dims
    is_one = b.Equal(padded, b.ints(1))
    axes = b.Reshape(b.NonZero(is_one), b.ints(-1))
    summed = b.ReduceSum(g, axes, keepdims=1, noop_with_empty_axes=1)
    return b.Reshape(summed, x_dims)


def zeros_like(ctx: VJPContext, x: str) -> str:
    """A tensor of zeros with the shape of ``x`` in the node's working type."""
    value = helper.make_tensor("zero", ctx.elem_type, [1], [0])
    return ctx.b.ConstantOfShape(ctx.b.Shape(x), value=value)


def as_mask(ctx: VJPContext, condition: str) -> str:
    """Casts a boolean tensor to the working float type (1.0 where true)."""
    return ctx.b.Cast(condition, to=ctx.elem_type)


def keep(ctx: VJPContext, condition: str, g: str) -> str:
    """``g`` where ``condition`` holds, zero elsewhere: Cast + Mul (onnxruntime's CPU Where
    kernel is about twice as slow on large tensors: Max's gradient graph on [16, 64, 112, 112]
    271 ms against Where's 561 ms, measured as for ``select``)."""
    return ctx.b.Mul(g, as_mask(ctx, condition))


def select(ctx: VJPContext, mask: str, if_one: str | float, if_zero: str | float) -> str:
    """``Where(mask, if_one, if_zero)`` for a 0/1 ``mask`` (``as_mask``), as
    mask·if_one + (1 − mask)·if_zero: the same values for finite operands (a factor 1.0 is
    not multiplied). Though it writes three more full-size tensors, onnxruntime's CPU Where
    kernel is slower still: the gradient graph of one LeakyRelu on [16, 64, 112, 112] ran in
    295 ms against Where's 510 ms, Elu's in 720 against 1403 (medians, 2 threads, a loaded
    2-core machine: the ratio is what carries over)."""
    b = ctx.b
    return b.Add(_scaled(ctx, mask, if_one), _scaled(ctx, b.Sub(ctx.scalar(1.0), mask), if_zero))


def _scaled(ctx: VJPContext, mask: str, value: str | float) -> str:
    if isinstance(value, str):
        return ctx.b.Mul(mask, value)
    return mask if value == 1.0 else ctx.b.Mul(mask, ctx.scalar(value))


def normalize_axis(axis: int, rank: int) -> int:
    """Maps a negative axis to its positive index."""
    return axis + rank if axis < 0 else axis


def spatial_attr(ctx: VJPContext, name: str, spatial: int, default: int) -> list[int]:
    """An ints attribute of a conv/pool node with one entry per spatial dim."""
    value = ctx.attr(name)
    return [default] * spatial if not value else [int(v) for v in value]


def explicit_pads(
    ctx: VJPContext, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Begin+end pads of a conv/pool node with ``auto_pad`` resolved (static sizes)."""
    spatial = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = ctx.attr("pads")
        return [int(p) for p in pads] if pads else [0] * (2 * spatial)
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def transposed_conv_geometry(
    in_sizes: Sequence[int], out_sizes: Sequence[int], kernel: Sequence[int],
    strides: Sequence[int], dilations: Sequence[int], pads_begin: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Pads and output_padding for a ConvTranspose that maps ``out_sizes`` back to ``in_sizes``.

    The forward window may leave trailing input rows unread (size not divisible by stride);
    those get zero gradient through ``output_padding``, which is always below the stride.
    """
    end_pads, output_padding = [], []
    for size, out, k, s, d, begin in zip(
        in_sizes, out_sizes, kernel, strides, dilations, pads_begin, strict=True
    ):
        full = (out - 1) * s + (k - 1) * d + 1
        end_crop = full - begin - size
        end_pads.append(max(end_crop, 0))
        output_padding.append(max(-end_crop, 0))
    return [*pads_begin, *end_pads], output_padding


def float_array(ctx: VJPContext, value: np.ndarray | float) -> str:
    """A constant in the node's working type."""
    np_type = helper.tensor_dtype_to_np_dtype(ctx.elem_type)
    return ctx.b.const(np.asarray(value, dtype=np_type))


def spatial_shape(ctx: VJPContext, x: str) -> tuple[int, ...] | None:
    """Shape of an N, C, spatial... tensor whose spatial dims are known; the batch and
    channel dims are returned as 0 when symbolic (callers use only ``[2:]``)."""
    shape = ctx.shape(x)
    if shape is None or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return tuple(d if isinstance(d, int) else 0 for d in shape)
