"""Spatial geometry of conv and pool nodes whose sizes are known only at run time.

The static rules compute pads, output_padding and crops from inferred sizes; where those are
symbolic, the same quantities come from ``Shape`` in the graph. A transposed convolution
with the leading pads only (no end pad, no output_padding) covers every row some window read,
from the first input row on: :func:`fit_spatial` crops it to the input's run-time size, and
zero-pads the trailing rows no window read (their gradient is zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fg_onnx.grad.registry import VJPContext

INT64_MAX = np.iinfo(np.int64).max


def size_free_pads(ctx: VJPContext, spatial: int, kernel: Sequence[int],
                   strides: Sequence[int], dilations: Sequence[int]) -> list[int] | None:
    """Begin+end pads when they do not depend on the input size (explicit pads, VALID, or
    SAME at stride 1, where the total is the kernel's reach); else None."""
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad == "NOTSET":
        pads = ctx.attr("pads")
        return [int(p) for p in pads] if pads else [0] * (2 * spatial)
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    if any(s != 1 for s in strides):
        return None
    reach = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
    small = [r // 2 for r in reach]
    large = [r - r // 2 for r in reach]
    return small + large if auto_pad == "SAME_UPPER" else large + small


def spatial_sizes(ctx: VJPContext, x: str) -> str:
    """x's spatial dims (all but N, C) at run time, as a 1-D int64 tensor."""
    return ctx.b.Shape(x, start=2)


def same_begin_pads(ctx: VJPContext, x: str, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int]) -> str:
    """The leading pads of SAME_UPPER/SAME_LOWER at x's run-time size (int64 [spatial]),
    as the ONNX spec defines them: total = max((⌈in/s⌉ − 1)·s + reach + 1 − in, 0)."""
    b = ctx.b
    size = spatial_sizes(ctx, x)
    stride = b.ints(list(strides))
    span = b.ints([(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)])
    out = b.Div(b.Add(size, b.Sub(stride, b.ints([1]))), stride)
    needed = b.Add(b.Mul(b.Sub(out, b.ints([1])), stride), span)
    total = b.Max(b.Sub(needed, size), b.ints([0]))
    small = b.Div(total, b.ints([2]))
    return small if ctx.attr("auto_pad") == "SAME_UPPER" else b.Sub(total, small)


def fit_spatial(ctx: VJPContext, dx: str, x: str, start: str | None = None,
                crop: bool = False) -> str:
    """``dx`` cut to x's run-time spatial size from ``start`` (int64 [spatial], default 0;
    with ``crop`` or a start), then zero-padded at the end where it is shorter."""
    b = ctx.b
    size = spatial_sizes(ctx, x)
    rank = ctx.rank(x)
    axes = b.ints(list(range(2, rank)))
    if start is not None:
        dx = b.Slice(dx, start, b.Add(start, size), axes)
    elif crop:
        dx = b.Slice(dx, b.ints([0] * (rank - 2)), size, axes)
    missing = b.Max(b.Sub(size, spatial_sizes(ctx, dx)), b.ints([0]))
    pads = b.Concat(b.ints([0] * (rank + 2)), missing, axis=0)
    return b.Pad(dx, pads)
