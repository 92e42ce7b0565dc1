"""Elementwise math: exp/log/powers, trigonometry, Max/Min/Mean, Where, casts and pass-throughs."""

from __future__ import annotations

import numpy as np

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import float_array, keep, unbroadcast, zeros_like


@vjp("Exp")
def exp_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Mul(ctx.cotangent(gy), ctx.output(0))]


@vjp("Log")
def log_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Div(ctx.cotangent(gy), ctx.input(0))]


@vjp("Sqrt")
def sqrt_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    y = ctx.output(0)
    return [ctx.b.Div(ctx.cotangent(gy), ctx.b.Add(y, y))]


@vjp("Reciprocal")
def reciprocal_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    y = ctx.output(0)
    return [ctx.b.Neg(ctx.b.Mul(ctx.cotangent(gy), ctx.b.Mul(y, y)))]


# Ops whose derivative is another ONNX op applied to the same input.
_DERIVATIVE_OP = {"Abs": "Sign", "Sin": "Cos", "Sinh": "Cosh", "Cosh": "Sinh"}


@vjp(*_DERIVATIVE_OP)
def derivative_op_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    derivative = ctx.b.op(_DERIVATIVE_OP[ctx.node.op_type], ctx.input(0))
    return [ctx.b.Mul(ctx.cotangent(gy), derivative)]


@vjp("Cos")
def cos_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Neg(ctx.b.Mul(ctx.cotangent(gy), ctx.b.Sin(ctx.input(0))))]


@vjp("Tan")
def tan_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    y = ctx.output(0)
    return [ctx.b.Mul(ctx.cotangent(gy), ctx.b.Add(ctx.scalar(1.0), ctx.b.Mul(y, y)))]


def _one_plus_square(ctx: VJPContext, sign: float) -> str:
    """``1 + sign * x^2`` for the node's input x."""
    x = ctx.input(0)
    return ctx.b.Add(ctx.scalar(1.0), ctx.b.Mul(ctx.b.Mul(x, x), ctx.scalar(sign)))


@vjp("Atan")
def atan_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Div(ctx.cotangent(gy), _one_plus_square(ctx, 1.0))]


@vjp("Atanh")
def atanh_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Div(ctx.cotangent(gy), _one_plus_square(ctx, -1.0))]


@vjp("Asin")
def asin_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Div(ctx.cotangent(gy), ctx.b.Sqrt(_one_plus_square(ctx, -1.0)))]


@vjp("Acos")
def acos_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Neg(ctx.b.Div(ctx.cotangent(gy), ctx.b.Sqrt(_one_plus_square(ctx, -1.0))))]


@vjp("Asinh")
def asinh_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.b.Div(ctx.cotangent(gy), ctx.b.Sqrt(_one_plus_square(ctx, 1.0)))]


@vjp("Acosh")
def acosh_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    x = ctx.input(0)
    return [ctx.b.Div(ctx.cotangent(gy), ctx.b.Sqrt(ctx.b.Sub(ctx.b.Mul(x, x), ctx.scalar(1.0))))]


@vjp("Pow")
def pow_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """d(x^p)/dx = p x^(p-1); d(x^p)/dp = y log(x), taken as 0 where x <= 0 (undefined there)."""
    g, b = ctx.cotangent(gy), ctx.b
    x, p, y = ctx.input(0), ctx.input(1), ctx.output(0)
    dx = unbroadcast(ctx, _pow_base_grad(ctx, g), x, y) if ctx.needs[0] else None
    dp = None
    if ctx.needs[1]:
        positive = b.Greater(x, ctx.scalar(0.0))
        safe_log = b.Log(b.Where(positive, x, ctx.scalar(1.0)))
        dp = unbroadcast(ctx, _as_type_of(ctx, b.Mul(b.Mul(g, y), safe_log), x, p), p, y)
    return [dx, dp]


def _as_type_of(ctx: VJPContext, value: str, source: str, target: str) -> str:
    """``value`` (typed like ``source``) cast to ``target``'s element type when they differ.

    Pow's base and exponent may have different types (float16 base, float or int exponent).
    """
    wanted = ctx.info.elem_type(target)
    return value if ctx.info.elem_type(source) == wanted else ctx.b.Cast(value, to=wanted)


def _pow_base_grad(ctx: VJPContext, g: str) -> str:
    b, x, p = ctx.b, ctx.input(0), ctx.input(1)
    constant = ctx.const(p)
    if constant is not None:
        exponent = np.asarray(constant, dtype=np.float64)
        if exponent.size == 1 and float(exponent.reshape(-1)[0]) == 1.0:
            return g
        if exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0:
            return b.Mul(g, b.Add(x, x))  # the common x^2 of hand-written norms
        power = b.Pow(x, float_array(ctx, exponent - 1.0))
        return b.Mul(g, b.Mul(power, float_array(ctx, exponent)))
    exponent_name = _as_type_of(ctx, p, p, x)
    power = b.Pow(x, b.Sub(exponent_name, ctx.scalar(1.0)))
    return b.Mul(g, b.Mul(power, exponent_name))


def _first_wins_masks(ctx: VJPContext) -> list[str | None]:
    """For Max/Min: where each needed input produced the output; ties go to the first one.

    The output is one of the inputs' values, so equality is exact. The last input takes what
    no earlier input claimed, which saves a comparison; None means "everywhere" (one input)
    or "not needed". Nothing is built past the last input that needs a gradient.
    """
    b, y, inputs = ctx.b, ctx.output(0), list(ctx.node.input)
    last_needed = max((i for i, need in enumerate(ctx.needs) if need), default=-1)
    masks: list[str | None] = [None] * len(inputs)
    claimed: str | None = None
    for i in range(last_needed + 1):
        if i == len(inputs) - 1:
            masks[i] = None if claimed is None else b.Not(claimed)
            break
        equal = b.Equal(inputs[i], y)
        if ctx.needs[i]:
            masks[i] = equal if claimed is None else b.And(equal, b.Not(claimed))
        if i < last_needed:
            claimed = equal if claimed is None else b.Or(claimed, equal)
    return masks


@vjp("Max", "Min")
def max_min_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The whole cotangent goes to the selected input; among tied inputs, to the first one."""
    g, y = ctx.cotangent(gy), ctx.output(0)
    grads: list[str | None] = []
    for name, need, mask in zip(ctx.node.input, ctx.needs, _first_wins_masks(ctx), strict=True):
        if not need:
            grads.append(None)
            continue
        # A mask of None (single input) selects everywhere.
        selected = g if mask is None else keep(ctx, mask, g)
        grads.append(unbroadcast(ctx, selected, name, y))
    return grads


@vjp("Mean")
def mean_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    y = ctx.output(0)
    share = ctx.b.Mul(ctx.cotangent(gy), ctx.scalar(1.0 / len(ctx.node.input)))
    return [unbroadcast(ctx, share, x, y) if need else None
            for x, need in zip(ctx.node.input, ctx.needs, strict=True)]


@vjp("Where")
def where_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g, b = ctx.cotangent(gy), ctx.b
    condition, y = ctx.input(0), ctx.output(0)
    dx = unbroadcast(ctx, keep(ctx, condition, g), ctx.input(1), y) if ctx.needs[1] else None
    dy = unbroadcast(ctx, keep(ctx, b.Not(condition), g), ctx.input(2), y) if ctx.needs[2] else None
    return [None, dx, dy]


@vjp("Mod")
def mod_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Float Mod is fmod: y = a - b trunc(a/b), so dy/da = 1 and dy/db = -trunc(a/b)."""
    g, bld = ctx.cotangent(gy), ctx.b
    a, d, y = ctx.input(0), ctx.input(1), ctx.output(0)
    da = unbroadcast(ctx, g, a, y) if ctx.needs[0] else None
    dd = None
    if ctx.needs[1]:
        # (a - y) / b is an integer up to rounding error; Round recovers it exactly.
        quotient = bld.Round(bld.Div(bld.Sub(a, y), d))
        dd = unbroadcast(ctx, bld.Neg(bld.Mul(g, quotient)), d, y)
    return [da, dd]


@vjp("Cast", "CastLike")
def cast_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Float-to-float casts pass the cotangent back in the input's type; others carry none."""
    x, y = ctx.input(0), ctx.output(0)
    if not (ctx.needs[0] and ctx.info.is_float(y)):
        return [None] * len(ctx.node.input)
    source = ctx.info.elem_type(x)
    g = ctx.cotangent(gy)
    back = g if ctx.info.elem_type(y) == source else ctx.b.Cast(g, to=source)
    return [back] + [None] * (len(ctx.node.input) - 1)


@vjp("Identity")
def identity_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    return [ctx.cotangent(gy)]


@vjp("Dropout", since=12)
def dropout_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Inference Dropout is the identity; the boolean mask output has no cotangent."""
    if ctx.has_input(2):
        training = ctx.const(ctx.input(2))
        if training is None:
            raise ctx.error("training_mode is not a constant; export the model in eval mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise ctx.error("training_mode is true: the output is random; export in eval mode")
    return [gy[0]] + [None] * (len(ctx.node.input) - 1)


@vjp("Trilu", since=14)
def trilu_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Trilu zeroes a fixed triangle, so its adjoint zeroes the same triangle."""
    diagonal = [ctx.input(1)] if ctx.has_input(1) else []
    upper = int(ctx.attr("upper", 1))
    return [ctx.b.Trilu(ctx.cotangent(gy), *diagonal, upper=upper), None]


@vjp("TopK", since=11)
def topk_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Values go back to the positions the Indices output names (distinct along the axis)."""
    if gy[0] is None:
        return [None] * len(ctx.node.input)
    x = ctx.input(0)
    scattered = ctx.b.ScatterElements(
        zeros_like(ctx, x), ctx.output(1), gy[0], axis=int(ctx.attr("axis", -1))
    )
    return [scattered, None]
