"""Bias taps: where a network adds a bias, and the product bias ⊙ gradient at that layer.

Explicit taps are the biases a layer declares (Conv B, Gemm C, BatchNormalization's
β − μγ/√(σ²+ε), an added constant, a norm's β). Implicit taps cover every other node that is
not positively homogeneous in its data inputs: its bias is y − Σ_j J_j u_j, and
⟨g, y − Σ_j J_j u_j⟩ = ⟨g, y⟩ − Σ_j ⟨J_jᵀ g, u_j⟩ needs only the VJPs the backward pass has
already built. With both, the full-gradient decomposition is exact for any network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fg_onnx.fullgrad.precision import Numerics
from fg_onnx.grad.registry import Cotangents, VJPContext
from fg_onnx.grad.rules.recurrent import (
    RECURRENT_OPS,
    batch_axis,
    gate_bias_total,
    is_piecewise_linear,
)

# Ops that are positively homogeneous of degree one in their data input(s) whatever their
# other (parameter) inputs are.
HOMOGENEOUS_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split",
    "Gather", "GatherElements", "Identity", "Dropout", "Cast", "Neg", "Resize", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
})
# Homogeneous when every float input depends on the explained input.
ALL_DATA_OPS = frozenset({"Add", "Sub", "Sum", "Concat", "Max", "Min", "Where"})
# Homogeneous (degree one) when exactly one factor depends on the explained input; a second
# data-dependent factor makes them products of activations.
PRODUCT_OPS = {"Mul": 2, "MatMul": 2, "Einsum": 99, "Gemm": 2, "Conv": 2, "ConvTranspose": 2}
NORM_OPS = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization"})


@dataclass(frozen=True)
class TotalPart:
    """A term of a tap's total: the per-sample sum of ``tensor`` times ``sign``."""

    tensor: str
    sign: float = 1.0
    wide: bool = False
    """Whether ``tensor`` is already a float32 sum of a float16 model (Numerics.wide)."""


@dataclass
class Tap:
    """One bias term of the full-gradient decomposition."""

    node: str
    """Name of the node the bias belongs to."""
    op_type: str
    kind: str
    """"bias", "batchnorm", "constant", "norm-beta", "gate-bias" (a recurrent layer's B) or
    "implicit"."""
    product: str | None
    """bias ⊙ gradient, shaped like the layer output (None: only the total is known)."""
    channel_axis: int | None
    """Axis along which the bias varies (None: scalar or full-tensor bias)."""
    rank: int = 0
    shape: tuple[int | str | None, ...] | None = None
    total_parts: list[TotalPart] = field(default_factory=list)
    """What adds up to this tap's total, ⟨bias, gradient⟩ per sample."""
    gradient: str | None = None
    """∂score/∂(layer output) at an explicit bias, without the bias factor (simple-fullgrad)."""
    bias: ExplicitBias | None = None
    """The bias the layer declares (None: an implicit tap)."""
    map_axis: int | None = None
    """The layer output's channel axis, followed from the input's layout (None: not known;
    see fg_onnx.fullgrad.channels)."""

    @property
    def bias_is_zero(self) -> bool:
        """Whether the bias is a constant zero: then its total and its ψ are exactly zero."""
        value = None if self.bias is None else self.bias.value
        return value is not None and not np.any(value)


def _data_inputs(ctx: VJPContext) -> list[int]:
    return [i for i, need in enumerate(ctx.needs) if need]


def _float_inputs(ctx: VJPContext) -> list[int]:
    return [i for i, name in enumerate(ctx.node.input) if name and ctx.info.is_float(name)]


def is_homogeneous(ctx: VJPContext) -> bool:
    """Whether y = Σ_j J_j u_j holds for this node (no implicit bias)."""
    op, data = ctx.node.op_type, _data_inputs(ctx)
    if op in HOMOGENEOUS_OPS:
        return True
    if op in ALL_DATA_OPS:
        if op == "Where":
            return all(ctx.needs[i] or _is_zero(ctx, i) for i in (1, 2))
        return set(data) == set(_float_inputs(ctx))
    if op in PRODUCT_OPS:
        factors = [i for i in data if i < PRODUCT_OPS[op]] if op != "Einsum" else data
        return len(factors) == 1
    if op == "Div":
        return data == [0]
    if op == "Pad":
        return ctx.attr("mode", "constant") != "constant" or len(ctx.node.input) < 3 or (
            _is_zero(ctx, 2))
    if op == "Clip":
        return _is_zero(ctx, 1) and not ctx.has_input(2)
    return op == "BatchNormalization"


def is_exact_with(ctx: VJPContext, taps: Sequence[Tap]) -> bool:
    """Whether the node's output is Σ_j J_j u_j plus the biases of ``taps`` (its explicit
    taps): an added constant makes an Add exact, a norm's β does not make it linear, a
    Relu RNN's gate biases do."""
    kinds = {tap.kind for tap in taps}
    if ctx.node.op_type in RECURRENT_OPS:
        return "implicit" in kinds or (is_piecewise_linear(ctx) and (
            "gate-bias" in kinds or _is_zero(ctx, 3)))
    return "constant" in kinds or is_homogeneous(ctx)


def _is_zero(ctx: VJPContext, i: int) -> bool:
    if not ctx.has_input(i):
        return True
    value = ctx.const(ctx.input(i))
    return value is not None and not np.any(value)


@dataclass(frozen=True)
class ExplicitBias:
    """A bias a layer declares."""

    tensor: str
    """The bias, broadcastable to the layer output."""
    kind: str
    channel_axis: int | None
    vector: str | None = None
    """The bias as a 1-D tensor along ``channel_axis``, when it has that form."""
    value: np.ndarray | None = None
    """``vector``'s value when it is a constant."""


def explicit_bias(ctx: VJPContext, implicit_mode: bool) -> ExplicitBias | None:
    """The bias ``ctx.node`` declares, or None."""
    op = ctx.node.op_type
    out_rank = ctx.rank(ctx.output(0))
    if op in ("Conv", "ConvTranspose") and ctx.has_input(2):
        return _per_channel(ctx, ctx.input(2), ctx.const(ctx.input(2)), out_rank, "bias")
    if op == "Gemm" and ctx.has_input(2) and not ctx.needs[2]:  # a computed C is data
        beta = float(ctx.attr("beta", 1.0))
        bias = ctx.input(2) if beta == 1.0 else ctx.b.Mul(ctx.input(2), ctx.scalar(beta))
        return ExplicitBias(bias, "bias", out_rank - 1)
    if op == "BatchNormalization":
        return _per_channel(ctx, *_batchnorm_bias(ctx), out_rank, "batchnorm")
    if op in ("Add", "Sub") and len(_data_inputs(ctx)) == 1:
        return _added_constant(ctx, out_rank)
    if op in NORM_OPS and not implicit_mode and ctx.has_input(2):
        if op == "LayerNormalization":
            return ExplicitBias(ctx.input(2), "norm-beta", None)
        if ctx.info.shape(ctx.input(2)) == (ctx.info.shape(ctx.output(0)) or (0, 0))[1:2]:
            return _per_channel(ctx, ctx.input(2), ctx.const(ctx.input(2)), out_rank,
                                "norm-beta")
    return None


def _per_channel(ctx: VJPContext, bias: str, value: np.ndarray | None, rank: int,
                 kind: str) -> ExplicitBias:
    """A 1-D bias along axis 1 of a rank-``rank`` output (``value``: its constant value)."""
    shape = [1, -1] + [1] * (rank - 2)
    if value is not None:
        tensor = ctx.b.const(value.reshape(shape), hint="bias")
    else:
        tensor = ctx.b.Reshape(bias, ctx.b.ints(shape))
    return ExplicitBias(tensor, kind, 1, bias, value)


def _batchnorm_bias(ctx: VJPContext) -> tuple[str, np.ndarray | None]:
    scale, beta, mean, var = (ctx.input(i) for i in range(1, 5))
    eps = float(ctx.attr("epsilon", 1e-5))
    values = [ctx.const(name) for name in (scale, beta, mean, var)]
    known = [v for v in values if v is not None]
    if len(known) == 4:
        gamma, shift, mu, variance = (np.asarray(x, dtype=np.float64) for x in known)
        bias = (shift - mu * gamma / np.sqrt(variance + eps)).astype(known[0].dtype)
        return ctx.b.const(bias, hint="bn_bias"), bias
    b = ctx.b
    inv_std = b.Reciprocal(b.Sqrt(b.Add(var, ctx.scalar(eps))))
    return b.Sub(beta, b.Mul(b.Mul(mean, scale), inv_std)), None


def _added_constant(ctx: VJPContext, out_rank: int) -> ExplicitBias:
    data = _data_inputs(ctx)[0]
    other = ctx.input(1 - data)
    negate = ctx.node.op_type == "Sub" and data == 0
    bias = ctx.b.Neg(other) if negate else other
    shape = ctx.info.shape(other)
    axis, vector, value = None, None, None
    if shape is not None:
        varying = [out_rank - len(shape) + i for i, d in enumerate(shape) if d != 1]
        axis = varying[0] if len(varying) == 1 else None
        constant = ctx.const(other)
        if axis is not None and constant is not None:
            value = (-constant if negate else constant).reshape(-1)
            vector = ctx.b.const(value, hint="bias")
    return ExplicitBias(bias, "constant", axis, vector, value)


def make_taps(ctx: VJPContext, gy: Cotangents, grads: Sequence[str | None],
              implicit_mode: bool, numerics: Numerics) -> list[Tap]:
    """The taps of one differentiated node (a recurrent layer has two: its gate biases and,
    in implicit mode, what its nonlinear gates add)."""
    if ctx.node.op_type in RECURRENT_OPS:
        return _recurrent_taps(ctx, gy, grads, implicit_mode)
    tap = make_tap(ctx, gy, grads, implicit_mode, numerics)
    return [] if tap is None else [tap]


def _recurrent_taps(ctx: VJPContext, gy: Cotangents, grads: Sequence[str | None],
                    implicit_mode: bool) -> list[Tap]:
    """The gate biases B are the layer's bias: their term is Σ_t ⟨∂score/∂(gate
    pre-activation), Wb + Rb⟩, which its rule computes. The implicit tap is the rest,
    ⟨g, y⟩ − Σ_j ⟨J_jᵀ g, u_j⟩ − the gate-bias term, per sample (the batch is not the first
    axis of a time-major layout). Neither has a map term: the steps are not pixels."""
    gate_total = None if _is_zero(ctx, 3) else gate_bias_total(ctx)
    taps = [] if gate_total is None else [_tap(ctx, "gate-bias", None, None,
                                               [TotalPart(gate_total)])]
    if not implicit_mode or is_exact_with(ctx, taps):
        return taps
    b = ctx.b
    terms = [(g, ctx.output(i), 1.0) for i, g in enumerate(gy) if g is not None] + [
        (grad, ctx.input(i), -1.0) for i, grad in enumerate(grads)
        if grad is not None and ctx.needs[i]]
    parts = []
    for cotangent, tensor, sign in terms:
        rank = ctx.rank(tensor)
        axes = [a for a in range(rank) if a != batch_axis(ctx, tensor)]
        per_sample = b.reduce("ReduceSum", b.Mul(cotangent, tensor), axes, keepdims=0)
        parts.append(TotalPart(per_sample, sign))
    if gate_total is not None:
        parts.append(TotalPart(gate_total, -1.0))
    return [*taps, _tap(ctx, "implicit", None, None, parts)]


def make_tap(ctx: VJPContext, gy: Cotangents, grads: Sequence[str | None],
             implicit_mode: bool, numerics: Numerics) -> Tap | None:
    """The tap of one differentiated node, or None when it adds no bias."""
    g = gy[0]
    if g is None:
        return None
    y = ctx.output(0)
    explicit = explicit_bias(ctx, implicit_mode)
    if explicit is not None:
        return _explicit_tap(ctx, g, explicit, numerics)
    if not implicit_mode or is_homogeneous(ctx):
        return None
    return _implicit_tap(ctx, gy, grads, y, numerics)


def _explicit_tap(ctx: VJPContext, g: str, bias: ExplicitBias, numerics: Numerics) -> Tap:
    """Its product is built for the outputs that want it (``--components``); the total and
    the map use the per-channel bias where there is one, which saves writing a tensor of the
    layer's size (unused nodes are dropped when the graph is assembled)."""
    product = ctx.b.Mul(g, bias.tensor)
    rank = ctx.info.rank(ctx.output(0)) or 0
    total = TotalPart(product)
    if bias.vector is not None and bias.channel_axis not in (None, 0):
        reduced = [a for a in range(1, rank) if a != bias.channel_axis]
        wide = bool(reduced) and numerics.half
        sums = numerics.channel_sums(g, reduced) if reduced else g
        # a computed bias is float16 in a float16 model: a float32 Mul must not read it
        # (a constant one gets a float32 copy from the conversion)
        vector = numerics.wide(bias.vector) if wide and bias.value is None else bias.vector
        # [N, C] ⊙ [C], summed per sample by the caller; not a MatMul, which onnxruntime
        # refuses for an empty batch
        total = TotalPart(ctx.b.Mul(sums, vector), wide=wide)
    tap = _tap(ctx, bias.kind, product, bias.channel_axis, [total])
    tap.gradient, tap.bias = g, bias
    return tap


def _implicit_tap(ctx: VJPContext, gy: Cotangents, grads: Sequence[str | None],
                  y: str, numerics: Numerics) -> Tap:
    b = ctx.b
    outputs = [(g, ctx.output(i)) for i, g in enumerate(gy) if g is not None]
    inputs = [(grad, ctx.input(i)) for i, grad in enumerate(grads)
              if grad is not None and ctx.needs[i]]
    terms = [(b.Mul(g, t), t, 1.0) for g, t in outputs] + [
        (b.Mul(g, u), u, -1.0) for g, u in inputs]
    y_shape = ctx.info.shape(y)
    same_shape = (
        len(outputs) == 1 and y_shape is not None and None not in y_shape
        and all(ctx.info.shape(u) == y_shape for _, u in inputs)
    )
    if not same_shape:
        parts = [_total_part(ctx, numerics, tensor, like, sign) for tensor, like, sign in terms]
        return _tap(ctx, "implicit", None, None, parts)
    product = terms[0][0]
    for tensor, _, _ in terms[1:]:
        product = b.Sub(product, tensor)
    return _tap(ctx, "implicit", product, None, [_total_part(ctx, numerics, product, y, 1.0)])


def _total_part(ctx: VJPContext, numerics: Numerics, tensor: str, like: str,
                sign: float) -> TotalPart:
    """In a float16 model, the per-sample sum of a whole layer-sized ``tensor`` (shaped like
    ``like``) as Numerics.channel_sums makes it (a float16 mean of a whole layer underflows
    where a row mean does not)."""
    rank = ctx.info.rank(like)
    if not numerics.half or rank is None or rank < 2:
        return TotalPart(tensor, sign)
    return TotalPart(numerics.channel_sums(tensor, list(range(1, rank))), sign, wide=True)


def _tap(ctx: VJPContext, kind: str, product: str | None, axis: int | None,
         parts: list[TotalPart]) -> Tap:
    y = ctx.output(0)
    return Tap(
        node=ctx.node.name, op_type=ctx.node.op_type, kind=kind, product=product,
        channel_axis=axis, rank=ctx.info.rank(y) or 0, shape=ctx.info.shape(y),
        total_parts=parts,
    )


def tap_description(tap: Tap) -> dict[str, object]:
    """JSON-ready facts about a tap (for model metadata)."""
    return {"node": tap.node, "op_type": tap.op_type, "kind": tap.kind,
            "channel_axis": tap.channel_axis, "map_axis": tap.map_axis, "rank": tap.rank}

