"""Pooling: MaxPool and GlobalMaxPool route the gradient to their argmax (a scatter-add),
AveragePool and GlobalAveragePool spread it evenly over their windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto, helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import (
    explicit_pads,
    float_array,
    spatial_attr,
    spatial_shape,
    transposed_conv_geometry,
    zeros_like,
)
from fg_onnx.grad.rules._sizes import fit_spatial, same_begin_pads, size_free_pads
from fg_onnx.graph.info import node_attributes


@vjp("MaxPool")
def max_pool_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Cotangents go to each window's argmax: a scatter-add (MaxUnpool for disjoint, on CPU).

    Overlapping windows may share an argmax, so their contributions are scatter-added
    (MaxUnpool would overwrite them)."""
    g = gy[0]
    if g is None:  # only the integer Indices output reaches the seed
        return [None]
    x = ctx.input(0)
    b = ctx.b
    unpool = _unpool_attrs(ctx)
    if unpool is not None:
        # No two windows share an input, so no index repeats and MaxUnpool's overwrite is
        # the sum: 2.4x faster than ScatterElements on onnxruntime's CPU (VGG's first pool).
        return [b.MaxUnpool(g, _row_major_indices(ctx), b.Shape(x), **unpool)]
    flat = b.Reshape(zeros_like(ctx, x), b.ints(-1))
    summed = b.ScatterElements(
        flat, b.Reshape(_row_major_indices(ctx), b.ints(-1)), b.Reshape(g, b.ints(-1)),
        axis=0, reduction="add",
    )
    return [b.Reshape(summed, b.Shape(x))]


def _unpool_attrs(ctx: VJPContext) -> dict[str, list[int]] | None:
    """Attributes of a MaxUnpool that inverts this pool, or None when that is not exact or
    possible: windows that share inputs, unknown spatial sizes, a type onnxruntime's
    MaxUnpool lacks, or a graph that may run on onnxruntime's CUDA provider, which has no
    MaxUnpool (a CPU fallback there would copy the tensors to the host and back). The output
    shape is given; the pads only keep onnxruntime's size check, (out − 1)·stride + kernel −
    pads ≤ size, from refusing ceil_mode and SAME pools."""
    if ctx.provider != "cpu":
        return None
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides = spatial_attr(ctx, "strides", len(kernel), 1)
    dilations = spatial_attr(ctx, "dilations", len(kernel), 1)
    if any((k - 1) * d + 1 > s for k, s, d in zip(kernel, strides, dilations, strict=True)):
        return None
    sizes, outs = ctx.shape(ctx.input(0)), ctx.shape(ctx.output(0))
    if ctx.elem_type != TensorProto.FLOAT or sizes is None or outs is None:
        return None
    pairs = list(zip(sizes[2:], outs[2:], strict=True))
    if not all(isinstance(h, int) and isinstance(o, int) for h, o in pairs):
        return None
    tails = [max(0, (o - 1) * s + k - h)  # type: ignore[operator]
             for (h, o), s, k in zip(pairs, strides, kernel, strict=True)]
    return {"kernel_shape": kernel, "strides": list(strides), "pads": [0] * len(kernel) + tails}


def _row_major_indices(ctx: VJPContext) -> str:
    """Flat (storage_order=0) argmax indices over the whole input tensor, as MaxPool's
    Indices output gives them (padding and ceil_mode windows past the edge already resolved)."""
    storage_order = int(ctx.attr("storage_order", 0))
    if storage_order == 0:
        # The forward node's own Indices (asked for when it does not give them yet) cost one
        # extra store per output, while a second MaxPool would redo the whole pooling.
        return ctx.forward_output(1, TensorProto.INT64, ctx.shape(ctx.output(0)))
    # Column-major Indices are already in use: a twin pool gives the row-major ones.
    attrs = node_attributes(ctx.node)
    attrs["storage_order"] = 0
    return ctx.b.op_multi("MaxPool", ctx.input(0), outputs=2, **attrs)[1]


@vjp("GlobalMaxPool")
def global_max_pool_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The gradient goes to the first maximum of each channel in row-major order (ties are
    resolved like onnxruntime's MaxPool Indices, which keep the first maximum)."""
    g = ctx.cotangent(gy)
    x = ctx.input(0)
    b = ctx.b
    rows = b.Reshape(x, b.ints([0, 0, -1]))
    argmax = b.ArgMax(rows, axis=2, keepdims=1)
    scattered = b.ScatterElements(
        zeros_like(ctx, rows), argmax, b.Reshape(g, b.ints([0, 0, 1])), axis=2
    )
    return [b.Reshape(scattered, b.Shape(x))]


@vjp("GlobalAveragePool")
def global_average_pool_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = ctx.cotangent(gy)
    x = ctx.input(0)
    b = ctx.b
    x_shape = spatial_shape(ctx, x)
    if x_shape is not None:
        scaled = b.Mul(g, ctx.scalar(1.0 / float(np.prod(x_shape[2:]))))
    else:
        sizes = b.Slice(b.Shape(x), b.ints(2), b.ints(np.iinfo(np.int64).max))
        count = b.Cast(b.ReduceProd(sizes, keepdims=0), to=ctx.elem_type)
        scaled = b.Div(g, count)
    return [b.Expand(scaled, b.Shape(x))]


@vjp("AveragePool")
def average_pool_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = ConvTranspose(g / divisor) with a ones kernel, channels folded into the batch.

    The divisor of each window (count_include_pad, ceil_mode windows past the padded edge) is
    taken from the runtime itself: AveragePool(ones) = valid_count / divisor, and the count of
    real (unpadded) inputs per window is plain geometry, so divisor-specific conventions never
    need to be re-derived.
    """
    g = ctx.cotangent(gy)
    x, y = ctx.input(0), ctx.output(0)
    x_shape, y_shape = spatial_shape(ctx, x), spatial_shape(ctx, y)
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    if x_shape is None or y_shape is None:
        return [_dynamic_average_pool_grad(ctx, g, x, y, kernel)]
    in_sizes, out_sizes = list(x_shape[2:]), list(y_shape[2:])
    spatial = len(in_sizes)
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    pads = explicit_pads(ctx, in_sizes, kernel, strides, dilations)
    counts = _window_counts(in_sizes, out_sizes, kernel, strides, dilations, pads[:spatial])
    b = ctx.b
    attrs = node_attributes(ctx.node)
    ones = float_array(ctx, np.ones([1, 1, *in_sizes]))
    means_of_ones = b.AveragePool(ones, **attrs)  # valid_count / divisor, per window
    # Windows with no real input (if a runtime keeps them) read 0/0; they feed nothing back.
    inv_divisor = b.Where(
        b.const(counts > 0),
        b.Div(means_of_ones, float_array(ctx, np.maximum(counts, 1))),
        ctx.scalar(0.0),
    )
    weighted = b.Reshape(b.Mul(g, inv_divisor), b.ints([-1, 1, *out_sizes]))
    ct_pads, output_padding = transposed_conv_geometry(
        in_sizes, out_sizes, kernel, strides, dilations, pads[:spatial]
    )
    spread = b.ConvTranspose(
        weighted, float_array(ctx, np.ones([1, 1, *kernel])),
        strides=strides, dilations=dilations, pads=ct_pads, kernel_shape=kernel,
        output_padding=output_padding if any(output_padding) else None,
    )
    return [b.Reshape(spread, b.Shape(x))]


def _dynamic_average_pool_grad(ctx: VJPContext, g: str, x: str, y: str,
                               kernel: list[int]) -> str:
    """The AveragePool VJP at run-time sizes: the real inputs per window are a Conv of ones
    (zero pads, and at the end more than the windows reach, cut to the pool's output size:
    ceil_mode's last windows included), the spread is a ConvTranspose with the leading pads
    (SAME at a stride: computed in the graph) fitted to x's size."""
    b, spatial = ctx.b, len(kernel)
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    pads = size_free_pads(ctx, spatial, kernel, strides, dilations)
    value = helper.make_tensor("one", ctx.elem_type, [1], [1])
    ones = b.ConstantOfShape(b.Concat(b.ints([1, 1]), b.Shape(x, start=2), axis=0), value=value)
    means_of_ones = b.AveragePool(ones, **node_attributes(ctx.node))
    window = float_array(ctx, np.ones([1, 1, *kernel]))
    geometry = {"strides": strides, "dilations": dilations, "kernel_shape": kernel}
    beyond = [(k - 1) * d + 1 + s for k, d, s in zip(kernel, dilations, strides, strict=True)]
    start = None
    if pads is not None:
        counted = b.Conv(ones, window, pads=[*pads[:spatial], *beyond], **geometry)
        heads = pads[:spatial]
    else:
        start = same_begin_pads(ctx, x, kernel, strides, dilations)
        padded = b.Pad(ones, b.Concat(b.ints([0, 0]), start, b.ints([0, 0, *beyond]), axis=0))
        counted = b.Conv(padded, window, pads=[0] * (2 * spatial), **geometry)
        heads = [0] * spatial
    counts = b.Slice(counted, b.ints([0] * spatial), b.Shape(y, start=2),
                     b.ints(list(range(2, 2 + spatial))))
    inv_divisor = b.Where(b.Greater(counts, ctx.scalar(0.0)),
                          b.Div(means_of_ones, b.Max(counts, ctx.scalar(1.0))), ctx.scalar(0.0))
    rows = b.ReduceProd(b.Shape(g, start=0, end=2), keepdims=1)
    weighted = b.Reshape(b.Mul(g, inv_divisor),
                         b.Concat(rows, b.ints([1]), b.Shape(g, start=2), axis=0))
    spread = b.ConvTranspose(weighted, window, pads=[*heads, *[0] * spatial], **geometry)
    return b.Reshape(fit_spatial(ctx, spread, x, start=start, crop=True), b.Shape(x))


def _window_counts(
    in_sizes: Sequence[int], out_sizes: Sequence[int], kernel: Sequence[int],
    strides: Sequence[int], dilations: Sequence[int], pads_begin: Sequence[int],
) -> np.ndarray:
    """How many real (unpadded) inputs each output window covers, shaped [1, 1, *out]."""
    counts = np.ones([1, 1], dtype=np.int64)
    for size, out, k, s, d, begin in zip(
        in_sizes, out_sizes, kernel, strides, dilations, pads_begin, strict=True
    ):
        taps = np.arange(out)[:, None] * s - begin + np.arange(k)[None, :] * d
        per_axis = ((taps >= 0) & (taps < size)).sum(axis=1)
        counts = counts[..., None] * per_axis
    return counts
