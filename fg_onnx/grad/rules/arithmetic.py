"""Elementwise arithmetic with broadcasting: Add, Sub, Mul, Div, Neg, Sum."""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import unbroadcast


@vjp("Add")
def add_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = ctx.cotangent(gy), ctx.output(0)
    return [unbroadcast(ctx, g, ctx.input(i), y) if ctx.needs[i] else None for i in range(2)]


@vjp("Sub")
def sub_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = ctx.cotangent(gy), ctx.output(0)
    da = unbroadcast(ctx, g, ctx.input(0), y) if ctx.needs[0] else None
    db = unbroadcast(ctx, ctx.b.Neg(g), ctx.input(1), y) if ctx.needs[1] else None
    return [da, db]


@vjp("Sum")
def sum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = ctx.cotangent(gy), ctx.output(0)
    return [
        unbroadcast(ctx, g, x, y) if need else None
        for x, need in zip(ctx.node.input, ctx.needs, strict=True)
    ]


@vjp("Mul")
def mul_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = ctx.cotangent(gy), ctx.output(0)
    gate = _sigmoid_gate(ctx)
    if gate is not None:
        return _silu_vjp(ctx, g, gate)
    a, b = ctx.input(0), ctx.input(1)
    da = unbroadcast(ctx, ctx.b.Mul(g, b), a, y) if ctx.needs[0] else None
    db = unbroadcast(ctx, ctx.b.Mul(g, a), b, y) if ctx.needs[1] else None
    return [da, db]


def _sigmoid_gate(ctx: VJPContext) -> int | None:
    """The input index of s when this Mul is SiLU, x · s with s = Sigmoid(x) (both inputs
    differentiated, s not wanted for itself)."""
    for i in (0, 1):
        s, x = ctx.input(i), ctx.input(1 - i)
        producer = ctx.info.producer.get(s)
        if (producer is not None and producer.op_type == "Sigmoid" and producer.input[0] == x
                and all(ctx.needs[:2]) and s not in ctx.wanted):
            return i
    return None


def _silu_vjp(ctx: VJPContext, g: str, gate: int) -> list[str | None]:
    """d(x·σ(x))/dx = σ + x·σ(1 − σ) = y + σ·(1 − y) with y = x·σ: the path through the
    Sigmoid is taken here, in four tensor writes instead of six (the Sigmoid then receives
    nothing from this node)."""
    b, y, s = ctx.b, ctx.output(0), ctx.input(gate)
    slope = b.Add(y, b.Mul(s, b.Sub(ctx.scalar(1.0), y)))
    grads: list[str | None] = [None, None]
    grads[1 - gate] = b.Mul(g, slope)
    return grads


@vjp("Div")
def div_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = ctx.cotangent(gy), ctx.output(0)
    a, b = ctx.input(0), ctx.input(1)
    g_over_b = ctx.b.Div(g, b)
    da = unbroadcast(ctx, g_over_b, a, y) if ctx.needs[0] else None
    # d(a/b)/db = -y/b, reusing the forward output instead of squaring b.
    db = unbroadcast(ctx, ctx.b.Neg(ctx.b.Mul(g_over_b, y)), b, y) if ctx.needs[1] else None
    return [da, db]


@vjp("Neg")
def neg_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Neg(ctx.cotangent(gy))]
