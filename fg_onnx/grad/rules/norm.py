"""Normalisation layers: BatchNormalization (inference), LayerNormalization,
InstanceNormalization, GroupNormalization, LRN, LpNormalization and
MeanVarianceNormalization.

Scales, biases and statistics inputs are weights: they never get gradients. Layer, instance and
group normalisation differentiate through the mean and variance they compute from the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import float_array, normalize_axis


def _reject_weight_gradients(ctx: VJPContext) -> None:
    if any(ctx.needs[1:]):
        raise ctx.error("scale, bias or statistics that depend on the explained input are "
                        "not supported")


def _in_working_type(ctx: VJPContext, name: str) -> str:
    """``name`` cast to the node's working type (BatchNormalization's T1/T2 may differ)."""
    if ctx.info.elem_type(name) in (0, ctx.elem_type):
        return name
    return ctx.b.Cast(name, to=ctx.elem_type)


def _per_channel(ctx: VJPContext, name: str, rank: int) -> str:
    """A [C] tensor reshaped to broadcast over an N, C, spatial... tensor of ``rank``."""
    return ctx.b.Reshape(_in_working_type(ctx, name), ctx.b.ints([-1] + [1] * (rank - 2)))


@vjp("BatchNormalization")
def batch_norm_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """In inference mode the layer is a per-channel affine map: dx = g * scale / sqrt(var + eps)."""
    g = ctx.cotangent(gy)
    if int(ctx.attr("training_mode", 0)):
        raise ctx.error("training_mode=1 (batch statistics) is not supported; export the model "
                        "in eval mode")
    _reject_weight_gradients(ctx)
    rank = ctx.rank(ctx.input(0))
    eps = float(ctx.attr("epsilon", 1e-5))
    scale, var = ctx.input(1), ctx.input(4)
    scale_value, var_value = ctx.const(scale), ctx.const(var)
    if scale_value is not None and var_value is not None:
        factor = scale_value.astype(np.float64) / np.sqrt(var_value.astype(np.float64) + eps)
        per_channel = float_array(ctx, factor.reshape([-1] + [1] * (rank - 2)))
    else:
        b = ctx.b
        inv_std = b.Reciprocal(b.Sqrt(b.Add(_in_working_type(ctx, var), ctx.scalar(eps))))
        factor_name = b.Mul(_in_working_type(ctx, scale), inv_std)
        per_channel = b.Reshape(factor_name, b.ints([-1] + [1] * (rank - 2)))
    return [ctx.b.Mul(g, per_channel), None, None, None, None]


def _normalized_vjp(
    ctx: VJPContext, x: str, g_hat: str | None, axes: Sequence[int], eps: float,
    g_mean: str | None = None, g_inv_std: str | None = None,
) -> str:
    """VJP through ``x_hat = (x - mean) * inv_std`` with mean and variance over ``axes``.

    ``g_hat`` is the cotangent of x_hat; ``g_mean`` and ``g_inv_std`` those of the statistics
    (shaped with ``axes`` kept), when they reach the seed. With r = inv_std:
    dx = r * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
         + g_mean / M - g_inv_std * r^2 * x_hat / M.
    """
    b = ctx.b
    centred = b.Sub(x, b.reduce("ReduceMean", x, axes))
    variance = b.reduce("ReduceMean", b.Mul(centred, centred), axes)
    inv_std = b.Reciprocal(b.Sqrt(b.Add(variance, ctx.scalar(eps))))
    x_hat = b.Mul(centred, inv_std)
    parts: list[str] = []
    if g_hat is not None:
        projected = b.Sub(
            b.Sub(g_hat, b.reduce("ReduceMean", g_hat, axes)),
            b.Mul(x_hat, b.reduce("ReduceMean", b.Mul(g_hat, x_hat), axes)),
        )
        parts.append(b.Mul(inv_std, projected))
    if g_mean is not None or g_inv_std is not None:
        per_element = _inverse_count(ctx, x, axes)
        if g_mean is not None:
            parts.append(b.Mul(b.Expand(g_mean, b.Shape(x)), per_element))
        if g_inv_std is not None:
            coef = b.Mul(b.Mul(g_inv_std, b.Mul(inv_std, inv_std)), per_element)
            parts.append(b.Neg(b.Mul(coef, x_hat)))
    return b.add_all(parts)


def _inverse_count(ctx: VJPContext, x: str, axes: Sequence[int]) -> str:
    """1/M for the M elements each statistic is taken over (a graph value when M is symbolic)."""
    shape = ctx.shape(x)
    dims = [shape[a] for a in axes] if shape is not None else [None]
    if all(isinstance(d, int) for d in dims):
        return ctx.scalar(1.0 / float(np.prod(dims)))  # type: ignore[arg-type]
    b = ctx.b
    count = b.ReduceProd(b.Gather(b.Shape(x), b.ints(axes)), keepdims=0)
    return b.Reciprocal(b.Cast(count, to=ctx.elem_type))


@vjp("LayerNormalization")
def layer_norm_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    _reject_weight_gradients(ctx)
    x = ctx.input(0)
    rank = ctx.rank(x)
    axes = list(range(normalize_axis(int(ctx.attr("axis", -1)), rank), rank))
    g_hat = None if gy[0] is None else ctx.b.Mul(gy[0], _in_working_type(ctx, ctx.input(1)))
    g_mean = gy[1] if len(gy) > 1 else None
    g_inv_std = gy[2] if len(gy) > 2 else None
    dx = _normalized_vjp(ctx, x, g_hat, axes, float(ctx.attr("epsilon", 1e-5)), g_mean,
                         g_inv_std)
    return [dx, None, None]


@vjp("InstanceNormalization")
def instance_norm_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = ctx.cotangent(gy)
    _reject_weight_gradients(ctx)
    x = ctx.input(0)
    rank = ctx.rank(x)
    g_hat = ctx.b.Mul(g, _per_channel(ctx, ctx.input(1), rank))
    eps = float(ctx.attr("epsilon", 1e-5))
    return [_normalized_vjp(ctx, x, g_hat, list(range(2, rank)), eps), None, None]


def _group_norm_vjp(ctx: VJPContext, g: str, per_channel_scale: bool) -> list[str | None]:
    """Statistics over each group of channels: the normalisation runs on the [N, G, -1] view."""
    _reject_weight_gradients(ctx)
    b = ctx.b
    x = ctx.input(0)
    groups = int(ctx.attr("num_groups"))
    grouped = b.ints([0, groups, -1])
    scale = _in_working_type(ctx, ctx.input(1))
    if per_channel_scale:
        g_hat = b.Reshape(b.Mul(g, _per_channel(ctx, scale, ctx.rank(x))), grouped)
    else:
        g_hat = b.Mul(b.Reshape(g, grouped), b.Reshape(scale, b.ints([groups, 1])))
    eps = float(ctx.attr("epsilon", 1e-5))
    dx = _normalized_vjp(ctx, b.Reshape(x, grouped), g_hat, [2], eps)
    return [b.Reshape(dx, b.Shape(x)), None, None]


@vjp("GroupNormalization", since=18, until=20)
def group_norm_18_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Opset 18: scale and bias hold one value per group."""
    return _group_norm_vjp(ctx, ctx.cotangent(gy), per_channel_scale=False)


@vjp("GroupNormalization", since=21)
def group_norm_21_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Opset 21: scale and bias hold one value per channel."""
    return _group_norm_vjp(ctx, ctx.cotangent(gy), per_channel_scale=True)


@vjp("LRN")
def lrn_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """y = x * D^-beta with D = bias + alpha/size * (window sum of x^2 across channels):
    dx = g * D^-beta - 2 alpha beta / size * x * W^T(g * x * D^(-beta-1)).

    Channels are moved to a spatial axis ([N, 1, C, rest]) so that the window sum W is a Conv
    with a ones kernel; its transpose W^T is the same Conv with the window mirrored.
    """
    g = ctx.cotangent(gy)
    b = ctx.b
    x = ctx.input(0)
    size = int(ctx.attr("size"))
    alpha, beta = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75))
    below, above = (size - 1) // 2, size - 1 - (size - 1) // 2
    ones = float_array(ctx, np.ones([1, 1, size, 1]))

    def channels_as_rows(name: str) -> str:
        return b.Reshape(b.Unsqueeze(name, b.ints(1)), b.ints([0, 0, 0, -1]))

    def window_sum(name: str, before: int, after: int) -> str:
        return b.Conv(name, ones, pads=[before, 0, after, 0], kernel_shape=[size, 1])

    v, gv = channels_as_rows(x), channels_as_rows(g)
    denom = b.Add(
        b.Mul(window_sum(b.Mul(v, v), below, above), ctx.scalar(alpha / size)),
        ctx.scalar(float(ctx.attr("bias", 1.0))),
    )
    powered = b.Pow(denom, ctx.scalar(-beta))
    direct = b.Mul(gv, powered)
    inner = b.Div(b.Mul(b.Mul(gv, v), powered), denom)
    through_denom = b.Mul(b.Mul(v, window_sum(inner, above, below)),
                          ctx.scalar(2.0 * alpha * beta / size))
    return [b.Reshape(b.Sub(direct, through_denom), b.Shape(x))]


@vjp("LpNormalization")
def lp_normalization_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """dx = (g − d Σ g·y) / ‖x‖_p, with d = y for p = 2 and sign(x) for p = 1."""
    g = gy[0]
    assert g is not None
    b, x, p = ctx.b, ctx.input(0), int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise ctx.error(f"p={p} is not defined for LpNormalization (1 or 2)")
    axes = [normalize_axis(int(ctx.attr("axis", -1)), ctx.rank(x))]
    y = ctx.output(0)
    norm = b.reduce("ReduceL2" if p == 2 else "ReduceL1", x, axes)
    direction = y if p == 2 else b.Sign(x)
    projected = b.Sub(g, b.Mul(direction, b.ReduceSum(b.Mul(g, y), b.ints(axes), keepdims=1)))
    return [b.Div(projected, norm)]


MVN_EPSILON = 1e-9
"""onnxruntime's and the ONNX function's: y = (x − mean) / (std + 1e-9)."""


@vjp("MeanVarianceNormalization")
def mean_variance_normalization_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """With c = x − mean and s = std + ε: dx = (g − mean(g) − c·mean(g·c)/(std·s)) / s."""
    g = gy[0]
    assert g is not None
    b, x = ctx.b, ctx.input(0)
    axes = [normalize_axis(int(a), ctx.rank(x)) for a in ctx.attr("axes", [0, 2, 3])]
    centred = b.Sub(x, b.reduce("ReduceMean", x, axes))
    std = b.Sqrt(b.reduce("ReduceMean", b.Mul(centred, centred), axes))
    spread = b.Add(std, ctx.scalar(MVN_EPSILON))
    along = b.Div(b.reduce("ReduceMean", b.Mul(g, centred), axes), b.Mul(std, spread))
    projected = b.Sub(b.Sub(g, b.reduce("ReduceMean", g, axes)), b.Mul(centred, along))
    return [b.Div(projected, spread)]
