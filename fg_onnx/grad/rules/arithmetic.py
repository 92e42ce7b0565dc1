"""Elementwise arithmetic with broadcasting: Add, Sub, Mul, Div, Neg, Sum."""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import unbroadcast


@vjp("Add")
def add_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = gy[0], ctx.output(0)
    assert g is not None
    return [unbroadcast(ctx, g, ctx.input(i), y) if ctx.needs[i] else None for i in range(2)]


@vjp("Sub")
def sub_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = gy[0], ctx.output(0)
    assert g is not None
    da = unbroadcast(ctx, g, ctx.input(0), y) if ctx.needs[0] else None
    db = unbroadcast(ctx, ctx.b.Neg(g), ctx.input(1), y) if ctx.needs[1] else None
    return [da, db]


@vjp("Sum")
def sum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = gy[0], ctx.output(0)
    assert g is not None
    return [
        unbroadcast(ctx, g, x, y) if need else None
        for x, need in zip(ctx.node.input, ctx.needs, strict=True)
    ]


@vjp("Mul")
def mul_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = gy[0], ctx.output(0)
    assert g is not None
    a, b = ctx.input(0), ctx.input(1)
    da = unbroadcast(ctx, ctx.b.Mul(g, b), a, y) if ctx.needs[0] else None
    db = unbroadcast(ctx, ctx.b.Mul(g, a), b, y) if ctx.needs[1] else None
    return [da, db]


@vjp("Div")
def div_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, y = gy[0], ctx.output(0)
    assert g is not None
    a, b = ctx.input(0), ctx.input(1)
    g_over_b = ctx.b.Div(g, b)
    da = unbroadcast(ctx, g_over_b, a, y) if ctx.needs[0] else None
    # d(a/b)/db = -y/b, reusing the forward output instead of squaring b.
    db = unbroadcast(ctx, ctx.b.Neg(ctx.b.Mul(g_over_b, y)), b, y) if ctx.needs[1] else None
    return [da, db]


@vjp("Neg")
def neg_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    assert gy[0] is not None
    return [ctx.b.Neg(gy[0])]
