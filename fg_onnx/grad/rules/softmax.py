"""Softmax and LogSoftmax along one axis (opset >= 13 semantics; models are opset >= 17).

Both rules reuse the forward output instead of recomputing exponentials.
"""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp


def _axis_sum(ctx: VJPContext, t: str) -> str:
    """Sum of ``t`` along the node's axis, kept for broadcasting."""
    return ctx.b.ReduceSum(t, ctx.b.ints(int(ctx.attr("axis", -1))), keepdims=1)


@vjp("Softmax", since=13)
def softmax_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = y ⊙ (g − Σ g⊙y)."""
    g, y, b = ctx.cotangent(gy), ctx.output(0), ctx.b
    return [b.Mul(y, b.Sub(g, _axis_sum(ctx, b.Mul(g, y))))]


@vjp("LogSoftmax", since=13)
def log_softmax_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = g − softmax(x) Σ g, with softmax(x) = exp(y)."""
    g, y, b = ctx.cotangent(gy), ctx.output(0), ctx.b
    return [b.Sub(g, b.Mul(b.Exp(y), _axis_sum(ctx, g)))]
