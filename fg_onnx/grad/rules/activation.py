"""Pointwise activations.

Where the derivative can be written with the forward output (Sigmoid, Tanh, Elu, ...) the rule
reuses it instead of recomputing transcendental functions of the input. Masks are strict
(``x > 0``, ``min < x < max``): at a kink the rule picks the flat side, like Relu.
"""

from __future__ import annotations

import math

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import as_mask, keep, select, unbroadcast

# Selu's defaults are the float32 values the ONNX spec fixes.
SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875
GELU_TANH_COEFF = 0.044715



@vjp("Relu")
def relu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    # Greater + Cast + Mul: onnxruntime's CPU Where and Sign kernels are slower than the three.
    positive = ctx.b.Greater(ctx.output(0), ctx.scalar(0.0))
    return [keep(ctx, positive, ctx.cotangent(gy))]


@vjp("LeakyRelu")
def leaky_relu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    alpha = float(ctx.attr("alpha", 0.01))
    # The input decides the branch: a negative alpha would flip the sign of y.
    negative = as_mask(ctx, b.Less(ctx.input(0), ctx.scalar(0.0)))
    return [b.Mul(g, select(ctx, negative, alpha, 1.0))]


@vjp("PRelu")
def prelu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    x, slope, y = ctx.input(0), ctx.input(1), ctx.output(0)
    negative = as_mask(ctx, b.Less(x, ctx.scalar(0.0)))
    dx = b.Mul(g, select(ctx, negative, slope, 1.0)) if ctx.needs[0] else None
    dslope = None
    if ctx.needs[1]:
        dslope = unbroadcast(ctx, b.Mul(b.Mul(g, x), negative), slope, y)
    return [dx, dslope]


@vjp("Clip", since=11)
def clip_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Clip computes ``min(max(x, lo), hi)``; its derivatives follow that order of operations.

    x passes where lo < y < hi (strict, as PyTorch's hardtanh). Reading y rather than x leaves
    x to the Clip alone, so onnxruntime can still fuse a Conv + Clip of the forward pass.
    ``y < hi`` is exactly "the outer min passed its first argument", so it also covers
    ``lo > hi`` (where y is hi everywhere and nothing reaches x or lo).
    """
    g, b = ctx.cotangent(gy), ctx.b
    x, lo, hi, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    below_hi = b.Less(y, hi) if hi else None
    dx = None
    if ctx.needs[0]:
        inside = _both(ctx, b.Greater(y, lo) if lo else None, below_hi)
        dx = g if inside is None else keep(ctx, inside, g)
    dlo = dhi = None
    if lo and ctx.needs[1]:
        clamped_lo = _both(ctx, b.Less(x, lo), below_hi)
        assert clamped_lo is not None
        dlo = unbroadcast(ctx, keep(ctx, clamped_lo, g), lo, y)
    if hi and ctx.needs[2]:
        assert below_hi is not None
        dhi = unbroadcast(ctx, keep(ctx, b.Not(below_hi), g), hi, y)
    return [dx, dlo, dhi]


def _both(ctx: VJPContext, a: str | None, c: str | None) -> str | None:
    """Logical and of optional conditions (None: no condition)."""
    if a is None or c is None:
        return a if c is None else c
    return ctx.b.And(a, c)


@vjp("Sigmoid")
def sigmoid_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    b, y = ctx.b, ctx.output(0)
    return [b.Mul(ctx.cotangent(gy), b.Mul(y, b.Sub(ctx.scalar(1.0), y)))]


@vjp("HardSigmoid")
def hard_sigmoid_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    b, y = ctx.b, ctx.output(0)
    alpha = float(ctx.attr("alpha", 0.2))
    inside = b.And(b.Greater(y, ctx.scalar(0.0)), b.Less(y, ctx.scalar(1.0)))
    return [keep(ctx, inside, b.Mul(ctx.cotangent(gy), ctx.scalar(alpha)))]


@vjp("HardSwish")
def hard_swish_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """y = x * h(x) with h = HardSigmoid(1/6, 1/2), so dy/dx = h + x/6 inside (-3, 3)."""
    b, x = ctx.b, ctx.input(0)
    h = b.HardSigmoid(x, alpha=1.0 / 6.0, beta=0.5)
    inside = b.Less(b.Abs(x), ctx.scalar(3.0))
    slope = keep(ctx, inside, b.Mul(x, ctx.scalar(1.0 / 6.0)))
    return [b.Mul(ctx.cotangent(gy), b.Add(h, slope))]


@vjp("Tanh")
def tanh_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    b, y = ctx.b, ctx.output(0)
    return [b.Mul(ctx.cotangent(gy), b.Sub(ctx.scalar(1.0), b.Mul(y, y)))]


@vjp("Erf")
def erf_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    b, x = ctx.b, ctx.input(0)
    density = b.Exp(b.Neg(b.Mul(x, x)))
    return [b.Mul(ctx.cotangent(gy), b.Mul(density, ctx.scalar(2.0 / math.sqrt(math.pi))))]


@vjp("Gelu", since=20)
def gelu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    approximate = ctx.attr("approximate", "none")
    if approximate == "tanh":
        return [ctx.b.Mul(ctx.cotangent(gy), _gelu_tanh_derivative(ctx, ctx.input(0)))]
    if approximate != "none":
        raise ctx.error(f"unknown approximate={approximate!r}")
    return [ctx.b.Mul(ctx.cotangent(gy), _gelu_erf_derivative(ctx, ctx.input(0)))]


def _gelu_erf_derivative(ctx: VJPContext, x: str) -> str:
    """Phi(x) + x * phi(x) for the standard normal cdf Phi and density phi."""
    b = ctx.b
    cdf = b.Mul(b.Add(b.Erf(b.Mul(x, ctx.scalar(math.sqrt(0.5)))), ctx.scalar(1.0)),
                ctx.scalar(0.5))
    density = b.Mul(b.Exp(b.Mul(b.Mul(x, x), ctx.scalar(-0.5))),
                    ctx.scalar(1.0 / math.sqrt(2.0 * math.pi)))
    return b.Add(cdf, b.Mul(x, density))


def _gelu_tanh_derivative(ctx: VJPContext, x: str) -> str:
    """d/dx of 0.5 x (1 + tanh(c (x + k x^3))), c = sqrt(2/pi), k = 0.044715."""
    b, c = ctx.b, math.sqrt(2.0 / math.pi)
    x2 = b.Mul(x, x)
    inner = b.Mul(x, b.Add(ctx.scalar(1.0), b.Mul(x2, ctx.scalar(GELU_TANH_COEFF))))
    t = b.Tanh(b.Mul(inner, ctx.scalar(c)))
    du = b.Add(ctx.scalar(c), b.Mul(x2, ctx.scalar(3.0 * GELU_TANH_COEFF * c)))
    one = ctx.scalar(1.0)
    outer = b.Mul(b.Add(one, t), ctx.scalar(0.5))
    chain = b.Mul(b.Mul(x, ctx.scalar(0.5)), b.Mul(b.Sub(one, b.Mul(t, t)), du))
    return b.Add(outer, chain)


@vjp("Softplus")
def softplus_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Mul(ctx.cotangent(gy), ctx.b.Sigmoid(ctx.input(0)))]


@vjp("Softsign")
def softsign_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    b = ctx.b
    denominator = b.Add(ctx.scalar(1.0), b.Abs(ctx.input(0)))
    return [b.Div(ctx.cotangent(gy), b.Mul(denominator, denominator))]


@vjp("Elu")
def elu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    # For x < 0, d/dx alpha (e^x - 1) = alpha e^x = y + alpha.
    negative = as_mask(ctx, b.Less(ctx.input(0), ctx.scalar(0.0)))
    return [b.Mul(g, select(ctx, negative, b.Add(ctx.output(0), ctx.scalar(alpha)), 1.0))]


@vjp("Selu")
def selu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    alpha = float(ctx.attr("alpha", SELU_ALPHA))
    gamma = float(ctx.attr("gamma", SELU_GAMMA))
    positive = as_mask(ctx, b.Greater(ctx.input(0), ctx.scalar(0.0)))
    negative_slope = b.Add(ctx.output(0), ctx.scalar(alpha * gamma))
    return [b.Mul(g, select(ctx, positive, gamma, negative_slope))]


@vjp("Celu")
def celu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    # For x <= 0, y = alpha (e^(x/alpha) - 1), so dy/dx = e^(x/alpha) = 1 + y/alpha: the
    # mask multiplies y/alpha only (exactly what a select of 1 and 1 + y/alpha gives).
    not_positive = as_mask(ctx, b.LessOrEqual(ctx.input(0), ctx.scalar(0.0)))
    excess = b.Mul(not_positive, b.Mul(ctx.output(0), ctx.scalar(1.0 / alpha)))
    return [b.Mul(g, b.Add(excess, ctx.scalar(1.0)))]


@vjp("Mish", since=18)
def mish_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """y = x tanh(softplus(x)); dy/dx = t + x sigmoid(x) (1 - t^2) with t = tanh(softplus(x))."""
    b, x = ctx.b, ctx.input(0)
    t = b.Tanh(b.Softplus(x))
    sech2 = b.Sub(ctx.scalar(1.0), b.Mul(t, t))
    return [b.Mul(ctx.cotangent(gy), b.Add(t, b.Mul(b.Mul(x, b.Sigmoid(x)), sech2)))]


@vjp("Swish", since=24)
def swish_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """y = x s with s = sigmoid(alpha x); dy/dx = s + alpha y (1 - s)."""
    b, x = ctx.b, ctx.input(0)
    alpha = float(ctx.attr("alpha", 1.0))
    s = b.Sigmoid(x if alpha == 1.0 else b.Mul(x, ctx.scalar(alpha)))
    alpha_y = b.Mul(ctx.output(0), ctx.scalar(alpha))
    return [b.Mul(ctx.cotangent(gy), b.Add(s, b.Mul(alpha_y, b.Sub(ctx.scalar(1.0), s))))]


@vjp("ThresholdedRelu")
def thresholded_relu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    alpha = float(ctx.attr("alpha", 1.0))
    return [keep(ctx, ctx.b.Greater(ctx.input(0), ctx.scalar(alpha)), ctx.cotangent(gy))]


@vjp("Shrink")
def shrink_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    lambd = float(ctx.attr("lambd", 0.5))
    outside = ctx.b.Greater(ctx.b.Abs(ctx.input(0)), ctx.scalar(lambd))
    return [keep(ctx, outside, ctx.cotangent(gy))]
