"""Convolutions: Conv's input gradient is a ConvTranspose with the same weights, and
ConvTranspose's input gradient is a Conv with the same weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import (
    explicit_pads,
    spatial_attr,
    spatial_shape,
    transposed_conv_geometry,
)
from fg_onnx.grad.rules._sizes import fit_spatial, same_begin_pads, size_free_pads


@vjp("Conv")
def conv_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = ctx.cotangent(gy)
    if any(ctx.needs[1:]):
        raise ctx.error("weights or bias that depend on the explained input are not supported")
    x, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    x_shape, w_shape, y_shape = spatial_shape(ctx, x), ctx.shape(w), ctx.shape(y)
    if w_shape is None or not all(isinstance(k, int) for k in w_shape[2:]):
        raise ctx.error("the kernel size of its weights must be known")
    kernel = [int(k) for k in w_shape[2:]]  # type: ignore[arg-type]
    if x_shape is None or y_shape is None:
        return [_dynamic_input_grad(ctx, g, x, w, kernel), None, None]
    spatial = len(x_shape) - 2
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    pads = explicit_pads(ctx, x_shape[2:], kernel, strides, dilations)
    out_sizes = [
        (size + pads[i] + pads[spatial + i] - ((k - 1) * d + 1)) // s + 1
        for i, (size, k, s, d) in enumerate(
            zip(x_shape[2:], kernel, strides, dilations, strict=True)
        )
    ]
    group = int(ctx.attr("group", 1))
    if all(s == 1 for s in strides):
        flipped = _flipped_conv(ctx, g, w, group, kernel, dilations, pads)
        if flipped is not None:
            return [flipped, None, None]
    ct_pads, output_padding = transposed_conv_geometry(
        x_shape[2:], out_sizes, kernel, strides, dilations, pads[:spatial]
    )
    dx = ctx.b.ConvTranspose(
        g, w,
        strides=strides, dilations=dilations, group=int(ctx.attr("group", 1)),
        pads=ct_pads, output_padding=output_padding if any(output_padding) else None,
        kernel_shape=kernel,
    )
    return [dx, None, None]


def _dynamic_input_grad(ctx: VJPContext, g: str, x: str, w: str, kernel: list[int]) -> str:
    """Conv's input gradient where x's spatial size is known only at run time: the same
    Conv or ConvTranspose without output_padding, fitted to x's run-time size (the rows no
    window read get zero gradient); SAME pads at a stride are computed in the graph."""
    spatial = ctx.rank(x) - 2
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    group = int(ctx.attr("group", 1))
    pads = size_free_pads(ctx, spatial, kernel, strides, dilations)
    unit_strides = all(s == 1 for s in strides)
    if pads is not None and unit_strides:
        flipped = _flipped_conv(ctx, g, w, group, kernel, dilations, pads)
        if flipped is not None:
            return flipped
    geometry = {"strides": strides, "dilations": dilations, "group": group,
                "kernel_shape": kernel}
    if pads is not None and unit_strides:
        return ctx.b.ConvTranspose(g, w, pads=pads, **geometry)
    if pads is not None:  # no end pad: the crop keeps the rows read, whatever the remainder
        dx = ctx.b.ConvTranspose(g, w, pads=[*pads[:spatial], *[0] * spatial], **geometry)
        return fit_spatial(ctx, dx, x, crop=True)
    dx = ctx.b.ConvTranspose(g, w, pads=[0] * (2 * spatial), **geometry)
    return fit_spatial(ctx, dx, x, start=same_begin_pads(ctx, x, kernel, strides, dilations))


def _flipped_conv(ctx: VJPContext, g: str, w: str, group: int, kernel: Sequence[int],
                  dilations: Sequence[int], pads: Sequence[int]) -> str | None:
    """The input gradient of a stride-1 Conv as a Conv with spatially flipped, transposed
    constant weights: the same result as ConvTranspose, about twice as fast on onnxruntime's
    CPU provider. None when the weights are not constant or a pad exceeds the kernel.

    The flipped weights are computed by nodes on the original initializer rather than stored:
    onnxruntime folds them once when it opens the model, and the augmented file and the
    rewrite do not hold a second copy of the weights.
    """
    weights = ctx.const(w)
    reach = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
    new_pads = [r - p for r, p in zip(reach * 2, pads, strict=True)]
    if weights is None or min(new_pads) < 0:
        return None
    return ctx.b.Conv(g, _flip_weights(ctx, w, weights.shape, group), group=group,
                      dilations=list(dilations), pads=new_pads, kernel_shape=list(kernel))


def _flip_weights(ctx: VJPContext, w: str, shape: Sequence[int], group: int) -> str:
    """[M, C/group, k...] → [C, M/group, k...] reversed along every spatial axis."""
    b, (m, c_per_group), spatial = ctx.b, shape[:2], len(shape) - 2
    if m // group > 1 and c_per_group > 1:
        grouped = b.Reshape(w, b.ints([group, m // group, c_per_group, *shape[2:]]))
        swapped = b.Transpose(grouped, perm=[0, 2, 1, *range(3, 3 + spatial)])
        w = b.Reshape(swapped, b.ints([group * c_per_group, m // group, *shape[2:]]))
    elif m // group > 1 or c_per_group > 1:  # one of the two is 1: a reshape swaps them
        w = b.Reshape(w, b.ints([group * c_per_group, m // group, *shape[2:]]))
    if all(k == 1 for k in shape[2:]):
        return w
    axes = list(range(2, 2 + spatial))
    big = np.iinfo(np.int64).max
    return b.Slice(w, b.ints([-1] * spatial), b.ints([-big] * spatial), b.ints(axes),
                   b.ints([-1] * spatial))


@vjp("ConvTranspose")
def conv_transpose_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """ConvTranspose is the adjoint of a Conv with the same weights ([C_in, C_out/group, k...]
    is Conv's [M, C/group, k...] read the other way), so its VJP is that Conv."""
    g = ctx.cotangent(gy)
    if any(ctx.needs[1:]):
        raise ctx.error("weights or bias that depend on the explained input are not supported")
    x, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    x_shape, w_shape, y_shape = spatial_shape(ctx, x), ctx.static_shape(w), spatial_shape(ctx, y)
    if w_shape is None:
        raise ctx.error("the shape of its weights must be known")
    if x_shape is None or y_shape is None:
        return [_dynamic_transpose_grad(ctx, g, x, w, list(w_shape[2:])), None, None]
    spatial = len(x_shape) - 2
    in_sizes, out_sizes, kernel = x_shape[2:], y_shape[2:], list(w_shape[2:])
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    heads = _transpose_head_pads(ctx, in_sizes, kernel, strides, dilations)
    # Output rows past the full extent (output_padding, a large output_shape) receive nothing
    # from x: a negative tail pad means the Conv reads them but its extra outputs are cut.
    tails = [
        (size - 1) * s + (k - 1) * d + 1 - head - out
        for size, out, k, s, d, head in zip(
            in_sizes, out_sizes, kernel, strides, dilations, heads, strict=True
        )
    ]
    dx = ctx.b.Conv(
        g, w, strides=strides, dilations=dilations, group=int(ctx.attr("group", 1)),
        pads=[*heads, *(max(t, 0) for t in tails)], kernel_shape=kernel,
    )
    if any(t < 0 for t in tails):
        axes = list(range(2, 2 + spatial))
        dx = ctx.b.Slice(dx, ctx.b.ints([0] * spatial), ctx.b.ints(in_sizes), ctx.b.ints(axes))
    return [dx, None, None]


def _dynamic_transpose_grad(ctx: VJPContext, g: str, x: str, w: str, kernel: list[int]) -> str:
    """ConvTranspose's input gradient at a run-time size. Without output_shape its pads
    do not depend on the size: the forward output is s·(in − 1) + reach + 1 + output_padding
    − pads, so the Conv's tail pad is the end pad minus output_padding (SAME: out = in·s)."""
    spatial = ctx.rank(x) - 2
    if ctx.attr("output_shape"):
        raise ctx.error("output_shape fixes its output size, so the input size must be known "
                        "(give it, e.g. with --input-size HxW)")
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    padding = spatial_attr(ctx, "output_padding", spatial, 0)
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad in ("NOTSET", "VALID"):
        pads = ctx.attr("pads") if auto_pad == "NOTSET" else None
        pads = [int(p) for p in pads] if pads else [0] * (2 * spatial)
        heads, tails = pads[:spatial], [e - p for e, p in zip(pads[spatial:], padding,
                                                             strict=True)]
    else:
        totals = [p + (k - 1) * d + 1 - s for p, k, s, d in zip(
            padding, kernel, strides, dilations, strict=True)]
        if min(totals) < 0:
            raise ctx.error("SAME padding with a stride above the kernel's reach needs the "
                            "input size (give it, e.g. with --input-size HxW)")
        heads = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        tails = [t - h - p for t, h, p in zip(totals, heads, padding, strict=True)]
    b = ctx.b
    dx = b.Conv(g, w, strides=strides, dilations=dilations, group=int(ctx.attr("group", 1)),
                pads=[*heads, *(max(t, 0) for t in tails)], kernel_shape=kernel)
    if any(t < 0 for t in tails):
        dx = b.Slice(dx, b.ints([0] * spatial), b.Shape(x, start=2),
                     b.ints(list(range(2, 2 + spatial))))
    return dx


def _transpose_head_pads(
    ctx: VJPContext, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Leading pads of a ConvTranspose, resolving ``output_shape`` and ``auto_pad`` as the
    ONNX spec and onnxruntime do (SAME_UPPER puts the odd pad at the end)."""
    spatial = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    output_shape = ctx.attr("output_shape")
    if not output_shape and auto_pad in ("NOTSET", "VALID"):
        pads = ctx.attr("pads")
        return [int(p) for p in pads[:spatial]] if pads and auto_pad == "NOTSET" else [0] * spatial
    padding = spatial_attr(ctx, "output_padding", spatial, 0)
    targets = (
        [int(v) for v in output_shape[-spatial:]] if output_shape
        else [size * s for size, s in zip(in_sizes, strides, strict=True)]
    )
    heads = []
    for size, k, s, d, p, target in zip(
        in_sizes, kernel, strides, dilations, padding, targets, strict=True
    ):
        total = max((size - 1) * s + p + (k - 1) * d + 1 - target, 0)
        heads.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return heads
