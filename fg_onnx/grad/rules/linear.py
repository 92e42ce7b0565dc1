"""Dense layers: Gemm."""

from __future__ import annotations

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import unbroadcast


@vjp("Gemm")
def gemm_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = gy[0]
    assert g is not None
    a, b_, y = ctx.input(0), ctx.input(1), ctx.output(0)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    gemm = ctx.b.Gemm
    da = db = dc = None
    if ctx.needs[0]:
        if trans_a:
            da = gemm(b_, g, alpha=alpha, transA=trans_b, transB=1)
        else:
            da = gemm(g, b_, alpha=alpha, transB=1 - trans_b)
    if ctx.needs[1]:
        if trans_b:
            db = gemm(g, a, alpha=alpha, transA=1, transB=trans_a)
        else:
            db = gemm(a, g, alpha=alpha, transA=1 - trans_a)
    if len(ctx.needs) > 2 and ctx.needs[2]:
        scaled = g if beta == 1.0 else ctx.b.Mul(g, ctx.scalar(beta))
        dc = unbroadcast(ctx, scaled, ctx.input(2), y)
    return [da, db, dc]
