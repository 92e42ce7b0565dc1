"""Pointwise activations."""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import as_mask


@vjp("Relu")
def relu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    assert gy[0] is not None
    positive = ctx.b.Greater(ctx.output(0), ctx.scalar(0.0))
    return [ctx.b.Mul(gy[0], as_mask(ctx, positive))]
