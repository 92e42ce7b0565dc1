"""Convolution: Conv's input gradient is a ConvTranspose with the same weights."""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import explicit_pads, spatial_attr, transposed_conv_geometry


@vjp("Conv")
def conv_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = gy[0]
    assert g is not None
    if any(ctx.needs[1:]):
        raise ctx.error("weights or bias that depend on the explained input are not supported")
    x, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    x_shape, w_shape, y_shape = ctx.static_shape(x), ctx.shape(w), ctx.shape(y)
    if x_shape is None or w_shape is None or y_shape is None:
        raise ctx.error("the spatial size of its input must be known (fix the input shape)")
    spatial = len(x_shape) - 2
    kernel = [int(k) for k in w_shape[2:]]  # type: ignore[arg-type]
    strides = spatial_attr(ctx, "strides", spatial, 1)
    dilations = spatial_attr(ctx, "dilations", spatial, 1)
    pads = explicit_pads(ctx, x_shape[2:], kernel, strides, dilations)
    out_sizes = [
        (size + pads[i] + pads[spatial + i] - ((k - 1) * d + 1)) // s + 1
        for i, (size, k, s, d) in enumerate(zip(x_shape[2:], kernel, strides, dilations))
    ]
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
