"""Recurrent layers: RNN, GRU, LSTM (every direction, both layouts, sequence_lens, initial
states, activations, clip, GRU's linear_before_reset, LSTM's peepholes and input_forget).

Backward through time needs each step's state. The hidden states are the node's output Y
(h_{t-1} is Y shifted by one step, initial_h first), so every gate pre-activation is
recomputed outside any loop with two MatMuls over all steps; LSTM's cell states, which the
node does not output, come from a forward Scan of elementwise ops. A reverse Scan then carries
the state cotangents back (one MatMul by R per step), and dX = Σ_t (gate cotangents) · W is
one MatMul outside it. A reverse direction is turned into a forward one by ReverseSequence
(the first sequence_lens steps of each sequence reversed); steps past a sequence's end output
zeros and keep the state, which the masks m_t say: h_t = m_t h'_t + (1 − m_t) h_{t−1}.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._recurrent_parts import (
    GATES,
    Activation,
    activations,
    refuse_unsupported,
    scan,
)
from fg_onnx.graph.builder import GraphBuilder

RECURRENT_OPS = frozenset(GATES)
INT64_MIN = np.iinfo(np.int64).min
_BIAS_TOTALS: weakref.WeakKeyDictionary[GraphBuilder, dict[str, str]] = (
    weakref.WeakKeyDictionary())


def gate_bias_total(ctx: VJPContext) -> str | None:
    """Per sample [N]: Σ B · ∂score/∂B of the recurrent node ``ctx`` differentiates (its gate
    biases, the node's FullGrad bias term), once its rule has run; None without B."""
    return _BIAS_TOTALS.get(ctx.b, {}).get(ctx.output(0))


def batch_axis(ctx: VJPContext, name: str) -> int:
    """The batch axis of one of the node's float inputs or outputs (X, Y: [T, N, ...] or
    with layout=1 [N, T, ...]; initial and last states [D, N, H] or [N, D, H])."""
    if int(ctx.attr("layout", 0)):
        return 0
    return 2 if name == ctx.output(0) else 1


def is_piecewise_linear(ctx: VJPContext) -> bool:
    """Whether the node is positively homogeneous in X, the initial state and B together
    (an RNN whose activations are Relu or LeakyRelu, without clip): then its output is
    Σ_j J_j u_j plus its gate-bias term exactly."""
    if ctx.node.op_type != "RNN" or ctx.attr("clip") is not None:
        return False
    directions = 2 if ctx.attr("direction", "forward") == "bidirectional" else 1
    linear = {"relu", "leakyrelu"}
    if not all(a.name in linear for acts in activations(ctx, directions) for a in acts):
        return False
    return not ctx.has_input(5) or ctx.needs[5] or _is_zero_state(ctx, ctx.input(5))


def _is_zero_state(ctx: VJPContext, name: str) -> bool:
    """A constant zero, or zeros of a computed shape (exporters' batch-sized initial_h)."""
    value = ctx.const(name)
    if value is not None:
        return not np.any(value)
    producer = ctx.info.producer.get(name)
    if producer is None or producer.op_type != "ConstantOfShape":
        return False
    fill = next((a.t for a in producer.attribute if a.name == "value"), None)
    return fill is None or not np.any(numpy_helper.to_array(fill))


@dataclass
class _Node:
    """What every direction of one node shares; sequences are time-major [T, N, ...]."""

    ctx: VJPContext
    hidden: int
    x: str
    y: str
    mask: str | None
    keep: str | None
    lens: str | None
    zeros: str
    gy: str | None
    g_last: list[str | None]
    initial: list[str | None]
    acts: list[list[Activation]]
    gates: dict[tuple[Activation, str], tuple[str, str]] = field(default_factory=dict)

    @property
    def b(self) -> GraphBuilder:
        return self.ctx.b

    @property
    def elem(self) -> int:
        return self.ctx.elem_type

    def scalar(self, value: float) -> str:
        return self.ctx.scalar(value)

    def in_time(self, sequence: str, reverse: bool) -> str:
        """A sequence in the order a direction reads it (an involution)."""
        if not reverse:
            return sequence
        if self.lens is not None:
            return self.b.ReverseSequence(sequence, self.lens, batch_axis=1, time_axis=0)
        b = self.b
        return b.Slice(sequence, b.ints([-1]), b.ints([INT64_MIN]), b.ints([0]), b.ints([-1]))

    def clip(self, a: str, b: GraphBuilder | None = None) -> tuple[str, str | None]:
        """The clipped pre-activation and where it is inside the bounds (None: no clip)."""
        limit = self.ctx.attr("clip")
        if limit is None:
            return a, None
        b = b or self.b
        bound = b.scalar(float(limit), self.elem)
        inside = b.Less(b.Abs(a), bound)
        return b.Clip(a, b.Neg(bound), bound), b.Cast(inside, to=self.elem)

    def gate(self, act: Activation, a: str, b: GraphBuilder | None = None) -> tuple[str, str]:
        """f(clip(a)) and its derivative w.r.t. a (built once per tensor of the outer graph;
        unused slopes are dropped with the other dead nodes)."""
        key = (act, a)
        if b is None and key in self.gates:
            return self.gates[key]
        builder = b or self.b
        clipped, inside = self.clip(a, builder)
        y = act.apply(builder, clipped, self.elem)
        slope = act.slope(builder, clipped, y, self.elem)
        result = y, slope if inside is None else builder.Mul(slope, inside)
        if b is None:
            self.gates[key] = result
        return result


@dataclass
class _Direction:
    """One direction's weights and its sequences in the order it reads them."""

    reverse: bool
    w: str
    r: str
    wb: str | None
    rb: str | None
    peephole: str | None
    acts: list[Activation]
    x: str
    h_prev: str
    gy: str | None
    dh_last: str
    dc_last: str
    c0: str


@dataclass
class _Grads:
    """One direction's cotangents: of the W-side and R-side gate pre-activations [T, N, GH]
    (they differ only in GRU's h gate with linear_before_reset) and of the initial states."""

    gates_w: str
    gates_r: str
    dh0: str
    dc0: str | None = None


def _time_major(ctx: VJPContext, name: str | None, rank: int) -> str | None:
    """layout=1 tensors ([N, T, ...] / [N, D, H]) in the op's layout-0 order."""
    if name is None or not int(ctx.attr("layout", 0)):
        return name
    perm = [1, 0, 2] if rank == 3 else [1, 2, 0, 3]
    return ctx.b.Transpose(name, perm=perm)


def _from_time_major(ctx: VJPContext, name: str) -> str:
    """[T, N, I] or [D, N, H] back to layout 1's [N, T, I] / [N, D, H]."""
    return ctx.b.Transpose(name, perm=[1, 0, 2]) if int(ctx.attr("layout", 0)) else name


def _masks(ctx: VJPContext, x: str, lens: str) -> tuple[str, str]:
    """m [T, N, 1] (1 where t < sequence_lens) and 1 − m."""
    b = ctx.b
    steps = b.Squeeze(b.Slice(b.Shape(x), b.ints([0]), b.ints([1])), b.ints([0]))
    t = b.Range(b.const(np.array(0, np.int64)), steps, b.const(np.array(1, np.int64)))
    valid = b.Less(b.Unsqueeze(t, b.ints([1])), b.Unsqueeze(lens, b.ints([0])))
    mask = b.Unsqueeze(b.Cast(valid, to=ctx.elem_type), b.ints([2]))
    return mask, b.Sub(ctx.scalar(1.0), mask)


def _node(ctx: VJPContext, gy: Cotangents, hidden: int, directions: int) -> _Node:
    b = ctx.b
    x = _time_major(ctx, ctx.input(0), 3)
    assert x is not None
    lens = mask = keep = None
    if ctx.has_input(4):
        lens = b.Cast(ctx.input(4), to=TensorProto.INT64)
        mask, keep = _masks(ctx, x, lens)
    size = b.Concat(b.Slice(b.Shape(x), b.ints([1]), b.ints([2])), b.ints([hidden]), axis=0)
    zeros = b.ConstantOfShape(size, value=helper.make_tensor("zero", ctx.elem_type, [1], [0]))
    initial = [_time_major(ctx, ctx.input(i) or None, 3) for i in (5, 6)]
    y = _time_major(ctx, ctx.output(0), 4)
    assert y is not None
    return _Node(ctx=ctx, hidden=hidden, x=x, y=y, mask=mask, keep=keep, lens=lens,
                 zeros=zeros, gy=_time_major(ctx, gy[0], 4),
                 g_last=[_time_major(ctx, g, 3) for g in gy[1:3]] + [None] * (3 - len(gy)),
                 initial=initial, acts=activations(ctx, directions))


def _pick(b: GraphBuilder, tensor: str, index: int, axis: int) -> str:
    return b.Gather(tensor, b.const(np.array(index, np.int64)), axis=axis)


def _direction(node: _Node, d: int, reverse: bool) -> _Direction:
    ctx, b = node.ctx, node.b
    rows = GATES[ctx.node.op_type] * node.hidden
    wb = rb = peephole = None
    if ctx.has_input(3):
        bias = _pick(b, ctx.input(3), d, 0)
        wb = b.Slice(bias, b.ints([0]), b.ints([rows]))
        rb = b.Slice(bias, b.ints([rows]), b.ints([2 * rows]))
    if ctx.has_input(7):
        peephole = _pick(b, ctx.input(7), d, 0)
    h0, c0 = (node.zeros if s is None else _pick(b, s, d, 0) for s in node.initial)
    states = node.in_time(_pick(b, node.y, d, 1), reverse)
    shifted = b.Slice(states, b.ints([0]), b.ints([-1]), b.ints([0]))
    h_prev = b.Concat(b.Unsqueeze(h0, b.ints([0])), shifted, axis=0)
    gy = None if node.gy is None else node.in_time(_pick(b, node.gy, d, 1), reverse)
    dh_last, dc_last = (node.zeros if g is None else _pick(b, g, d, 0) for g in node.g_last[:2])
    return _Direction(reverse=reverse, w=_pick(b, ctx.input(1), d, 0),
                      r=_pick(b, ctx.input(2), d, 0), wb=wb, rb=rb, peephole=peephole,
                      acts=node.acts[d], x=node.in_time(node.x, reverse), h_prev=h_prev, gy=gy,
                      dh_last=dh_last, dc_last=dc_last, c0=c0)


def _affine(b: GraphBuilder, x: str, weight: str, bias: str | None) -> str:
    """x · weightᵀ (+ bias) over all steps."""
    product = b.MatMul(x, b.Transpose(weight, perm=[1, 0]))
    return product if bias is None else b.Add(product, bias)


def _split(b: GraphBuilder, x: str, parts: int) -> list[str]:
    if parts == 1:
        return [x]
    return b.op_multi("Split", x, outputs=parts, axis=-1, num_outputs=parts) \
        if b.info.opset >= 18 else b.op_multi("Split", x, outputs=parts, axis=-1)


def _incoming(node: _Node, b: GraphBuilder, state: str, steps: dict[str, str]) -> str:
    """Cotangent of this step's new state h'_t: m_t (∂h_t + ∂Y_t)."""
    total = b.Add(state, steps["gy"]) if "gy" in steps else state
    return b.Mul(total, steps["mask"]) if "mask" in steps else total


def _carried(node: _Node, b: GraphBuilder, state: str, through: str,
             steps: dict[str, str]) -> str:
    """Cotangent of the previous state: ``through`` the step plus (1 − m_t) ∂h_t where the
    step kept the state."""
    return b.Add(through, b.Mul(state, steps["keep"])) if "keep" in steps else through


def _reverse_scan(node: _Node, direction: _Direction, states: list[str],
                  sequences: dict[str, str],
                  step: Callable[[GraphBuilder, list[str], dict[str, str]],
                                 tuple[list[str], list[str]]]) -> tuple[list[str], list[str]]:
    """A Scan from the last step to the first over ``sequences`` (with the Y cotangent and
    the masks added under the names "gy", "mask", "keep")."""
    named = dict(sequences)
    if direction.gy is not None:
        named["gy"] = direction.gy
    if node.mask is not None and node.keep is not None:
        named["mask"], named["keep"] = node.mask, node.keep
    keys = list(named)

    def body(b: GraphBuilder, state: list[str], slices: list[str]) -> tuple[list[str],
                                                                           list[str]]:
        return step(b, state, dict(zip(keys, slices, strict=True)))

    return scan(node.ctx, states, [named[k] for k in keys], body, reverse=True)


def _rnn(node: _Node, direction: _Direction) -> _Grads:
    b = node.b
    a = b.Add(_affine(b, direction.x, direction.w, direction.wb),
              _affine(b, direction.h_prev, direction.r, direction.rb))
    _, slope = node.gate(direction.acts[0], a)

    def step(sb: GraphBuilder, state: list[str], steps: dict[str, str]) -> tuple[list[str],
                                                                               list[str]]:
        da = sb.Mul(_incoming(node, sb, state[0], steps), steps["slope"])
        return [_carried(node, sb, state[0], sb.MatMul(da, direction.r), steps)], [da]

    (dh0,), (da,) = _reverse_scan(node, direction, [direction.dh_last], {"slope": slope}, step)
    return _Grads(gates_w=da, gates_r=da, dh0=dh0)


@vjp("RNN", "GRU", "LSTM")
def recurrent_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Backward through time (gates from Y, reverse Scan); refused: a node without Y output.

    Also refused: W, R, B or P computed from the explained input."""
    refuse_unsupported(ctx)
    op = ctx.node.op_type
    w_shape = ctx.static_shape(ctx.input(1))
    r_shape = ctx.static_shape(ctx.input(2))
    if w_shape is None or r_shape is None:
        raise ctx.error("W and R need static shapes")
    directions, hidden = w_shape[0], r_shape[-1]
    direction = ctx.attr("direction", "forward")
    node = _node(ctx, gy, hidden, directions)
    backward = {"RNN": _rnn, "GRU": _gru, "LSTM": _lstm}[op]
    b = ctx.b
    dx_parts, dh0, dc0, bias_parts = [], [], [], []
    for d in range(directions):
        one = _direction(node, d, direction == "reverse" or d == 1)
        grads = backward(node, one)
        if ctx.needs[0]:
            dx_parts.append(node.in_time(b.MatMul(grads.gates_w, one.w), one.reverse))
        dh0.append(b.Unsqueeze(grads.dh0, b.ints([0])))
        if grads.dc0 is not None:
            dc0.append(b.Unsqueeze(grads.dc0, b.ints([0])))
        if one.wb is not None and one.rb is not None:
            bias_parts.append(_bias_dot(b, grads.gates_w, one.wb))
            bias_parts.append(_bias_dot(b, grads.gates_r, one.rb))
    if bias_parts:
        _BIAS_TOTALS.setdefault(b, {})[ctx.output(0)] = b.add_all(bias_parts)
    result: list[str | None] = [None] * len(ctx.node.input)
    if ctx.needs[0]:
        result[0] = _from_time_major(ctx, b.add_all(dx_parts))
    for index, parts in ((5, dh0), (6, dc0)):
        if index < len(ctx.needs) and ctx.needs[index]:
            result[index] = _from_time_major(ctx, b.Concat(*parts, axis=0))
    return result


def _bias_dot(b: GraphBuilder, gates: str, bias: str) -> str:
    """Per sample [N]: Σ_t ⟨gate cotangent_t, bias⟩."""
    summed = b.reduce("ReduceSum", gates, [0], keepdims=0)
    return b.reduce("ReduceSum", b.Mul(summed, bias), [1], keepdims=0)


def _gru(node: _Node, direction: _Direction) -> _Grads:
    """z, r, h gates: h' = (1 − z) h̃ + z h, h̃ = g(x W_hᵀ + (r ⊙ h) R_hᵀ + b) or, with
    linear_before_reset, g(x W_hᵀ + r ⊙ (h R_hᵀ + Rb_h) + Wb_h)."""
    b, hidden = node.b, node.hidden
    f, g = direction.acts
    xz, xr, xh = _split(b, _affine(b, direction.x, direction.w, direction.wb), 3)
    r_zr = b.Slice(direction.r, b.ints([0]), b.ints([2 * hidden]))
    r_h = b.Slice(direction.r, b.ints([2 * hidden]), b.ints([3 * hidden]))
    rb_zr = rb_h = None
    if direction.rb is not None:
        rb_zr = b.Slice(direction.rb, b.ints([0]), b.ints([2 * hidden]))
        rb_h = b.Slice(direction.rb, b.ints([2 * hidden]), b.ints([3 * hidden]))
    hz, hr = _split(b, _affine(b, direction.h_prev, r_zr, rb_zr), 2)
    z, z_slope = node.gate(f, b.Add(xz, hz))
    reset, r_slope = node.gate(f, b.Add(xr, hr))
    after = bool(int(node.ctx.attr("linear_before_reset", 0)))
    if after:
        recurrent = _affine(b, direction.h_prev, r_h, rb_h)
        candidate, h_slope = node.gate(g, b.Add(xh, b.Mul(reset, recurrent)))
    else:
        recurrent = _affine(b, b.Mul(reset, direction.h_prev), r_h, rb_h)
        candidate, h_slope = node.gate(g, b.Add(xh, recurrent))
    k_z = b.Mul(b.Sub(direction.h_prev, candidate), z_slope)
    k_h = b.Mul(b.Sub(node.scalar(1.0), z), h_slope)
    if after:
        return _gru_after(node, direction, z, reset, k_z, k_h, b.Mul(recurrent, r_slope))
    return _gru_before(node, direction, z, reset, k_z, k_h, r_slope, r_zr, r_h)


def _gru_after(node: _Node, direction: _Direction, z: str, reset: str, k_z: str, k_h: str,
               k_r: str) -> _Grads:
    """linear_before_reset: every gate cotangent is the step's ∂h' times a factor known
    before the Scan; the h gate's R-side (Rb_h, R_h) cotangent carries the reset r."""
    b = node.b
    k_w = b.Concat(k_z, b.Mul(k_h, k_r), k_h, axis=-1)
    k_rec = b.Concat(k_z, b.Mul(k_h, k_r), b.Mul(k_h, reset), axis=-1)

    def step(sb: GraphBuilder, state: list[str], steps: dict[str, str]) -> tuple[list[str],
                                                                               list[str]]:
        dh = _incoming(node, sb, state[0], steps)
        gates = sb.Mul(sb.Concat(dh, dh, dh, axis=-1), steps["k_rec"])
        through = sb.Add(sb.MatMul(gates, direction.r), sb.Mul(dh, steps["z"]))
        return [_carried(node, sb, state[0], through, steps)], [dh]

    (dh0,), (dh_new,) = _reverse_scan(node, direction, [direction.dh_last],
                                      {"k_rec": k_rec, "z": z}, step)
    tiled = b.Concat(dh_new, dh_new, dh_new, axis=-1)
    return _Grads(gates_w=b.Mul(tiled, k_w), gates_r=b.Mul(tiled, k_rec), dh0=dh0)


def _gru_before(node: _Node, direction: _Direction, z: str, reset: str, k_z: str, k_h: str,
                r_slope: str, r_zr: str, r_h: str) -> _Grads:
    """The reset gate's cotangent goes through R_h (it scales h before the product): two
    MatMuls per step."""
    k_r = node.b.Mul(direction.h_prev, r_slope)

    def step(sb: GraphBuilder, state: list[str], steps: dict[str, str]) -> tuple[list[str],
                                                                               list[str]]:
        dh = _incoming(node, sb, state[0], steps)
        dz, dc = sb.Mul(dh, steps["k_z"]), sb.Mul(dh, steps["k_h"])
        dq = sb.MatMul(dc, r_h)
        dr = sb.Mul(dq, steps["k_r"])
        through = sb.add_all([sb.MatMul(sb.Concat(dz, dr, axis=-1), r_zr),
                              sb.Mul(dq, steps["reset"]), sb.Mul(dh, steps["z"])])
        return [_carried(node, sb, state[0], through, steps)], [sb.Concat(dz, dr, dc, axis=-1)]

    (dh0,), (gates,) = _reverse_scan(
        node, direction, [direction.dh_last],
        {"k_z": k_z, "k_h": k_h, "k_r": k_r, "reset": reset, "z": z}, step)
    return _Grads(gates_w=gates, gates_r=gates, dh0=dh0)


def _lstm(node: _Node, direction: _Direction) -> _Grads:
    """i, o, f, c gates: c' = f ⊙ c + i ⊙ g(a_c), h' = o ⊙ h(c'); peepholes add P_i ⊙ c,
    P_f ⊙ c to a_i, a_f and P_o ⊙ c' to a_o; input_forget couples f = 1 − i. The cell
    states come from a forward Scan."""
    b = node.b
    pre = b.Add(_affine(b, direction.x, direction.w, direction.wb),
                _affine(b, direction.h_prev, direction.r, direction.rb))
    c_prev, c_new, a_i, a_o, a_f, a_c = _cells(node, direction, pre)
    f, g, h = direction.acts
    i, i_slope = node.gate(f, a_i)
    o, o_slope = node.gate(f, a_o)
    cell_in, c_slope = node.gate(g, a_c)
    h_cell = h.apply(b, c_new, node.elem)
    k_o = b.Mul(h_cell, o_slope)
    k_cell = b.Mul(o, h.slope(b, c_new, h_cell, node.elem))
    p_i, p_o, p_f = (None, None, None) if direction.peephole is None else _split(
        b, direction.peephole, 3)
    if p_o is not None:
        k_cell = b.Add(k_cell, b.Mul(k_o, p_o))
    if _coupled(node):  # a_i reaches c' through i and through f = 1 − i; W_f, R_f unused
        forget = b.Sub(node.scalar(1.0), i)
        k_i = b.Mul(b.Sub(cell_in, c_prev), i_slope)
        k_f = b.Mul(c_prev, node.scalar(0.0))
        back = [forget]
    else:
        forget, f_slope = node.gate(f, a_f)
        k_i, k_f = b.Mul(cell_in, i_slope), b.Mul(c_prev, f_slope)
        back = [forget] if p_f is None else [forget, b.Mul(k_f, p_f)]
    k_back = b.add_all(back if p_i is None else [*back, b.Mul(k_i, p_i)])
    k_gates = b.Concat(k_i, k_o, k_f, b.Mul(i, c_slope), axis=-1)

    def step(sb: GraphBuilder, state: list[str], steps: dict[str, str]) -> tuple[list[str],
                                                                               list[str]]:
        dh, dc = _incoming(node, sb, state[0], steps), state[1]
        kept = sb.Mul(dc, steps["mask"]) if "mask" in steps else dc
        d_cell = sb.Add(kept, sb.Mul(dh, steps["k_cell"]))
        gates = sb.Mul(sb.Concat(d_cell, dh, d_cell, d_cell, axis=-1), steps["k_gates"])
        back_h = _carried(node, sb, state[0], sb.MatMul(gates, direction.r), steps)
        back_c = _carried(node, sb, dc, sb.Mul(d_cell, steps["k_back"]), steps)
        return [back_h, back_c], [gates]

    (dh0, dc0), (gates,) = _reverse_scan(
        node, direction, [direction.dh_last, direction.dc_last],
        {"k_cell": k_cell, "k_gates": k_gates, "k_back": k_back}, step)
    return _Grads(gates_w=gates, gates_r=gates, dh0=dh0, dc0=dc0)


def _coupled(node: _Node) -> bool:
    return bool(int(node.ctx.attr("input_forget", 0)))


def _cells(node: _Node, direction: _Direction, pre: str) -> list[str]:
    """c_{t−1} and c'_t of every step, and the gate pre-activations a_i, a_o, a_f, a_c
    (with the peephole terms), from a forward Scan of elementwise ops."""
    f, g, _ = direction.acts
    peephole = direction.peephole
    if peephole is None:
        return _plain_cells(node, direction, pre)
    sequences = [pre] if node.mask is None else [pre, node.mask]
    masked = node.mask is not None
    if peephole is not None:
        p_i, p_o, p_f = _split(node.b, peephole, 3)

    def body(sb: GraphBuilder, state: list[str], steps: list[str]) -> tuple[list[str],
                                                                          list[str]]:
        c = state[0]
        a_i, a_o, a_f, a_c = _split(sb, steps[0], 4)
        if peephole is not None:
            a_i, a_f = sb.Add(a_i, sb.Mul(p_i, c)), sb.Add(a_f, sb.Mul(p_f, c))
        i, cell_in = node.gate(f, a_i, sb)[0], node.gate(g, a_c, sb)[0]
        forget = (sb.Sub(sb.scalar(1.0, node.elem), i) if _coupled(node)
                  else node.gate(f, a_f, sb)[0])
        c_new = sb.Add(sb.Mul(forget, c), sb.Mul(i, cell_in))
        if peephole is not None:
            a_o = sb.Add(a_o, sb.Mul(p_o, c_new))
        c_next = sb.Add(c, sb.Mul(steps[1], sb.Sub(c_new, c))) if masked else c_new
        return [c_next], [c, c_new, a_i, a_o, a_f, a_c]

    _, stacked = scan(node.ctx, [direction.c0], sequences, body, reverse=False)
    return stacked


def _plain_cells(node: _Node, direction: _Direction, pre: str) -> list[str]:
    """Without peepholes no gate reads the cell: the gates are computed over all steps at
    once and the Scan only runs c ← f ⊙ c + i ⊙ g (a few ops per step)."""
    b = node.b
    f, g, _ = direction.acts
    a_i, a_o, a_f, a_c = _split(b, pre, 4)
    i = node.gate(f, a_i)[0]
    forget = b.Sub(node.scalar(1.0), i) if _coupled(node) else node.gate(f, a_f)[0]
    written = b.Mul(i, node.gate(g, a_c)[0])
    masked = node.mask is not None
    sequences = [forget, written, *([node.mask] if node.mask is not None else [])]

    def body(sb: GraphBuilder, state: list[str], steps: list[str]) -> tuple[list[str],
                                                                          list[str]]:
        c = state[0]
        c_new = sb.Add(sb.Mul(steps[0], c), steps[1])
        c_next = sb.Add(c, sb.Mul(steps[2], sb.Sub(c_new, c))) if masked else c_new
        return [c_next], [c_next]

    _, (cells,) = scan(node.ctx, [direction.c0], sequences, body, reverse=False)
    shifted = b.Slice(cells, b.ints([0]), b.ints([-1]), b.ints([0]))
    c_prev = b.Concat(b.Unsqueeze(direction.c0, b.ints([0])), shifted, axis=0)
    # past a sequence's end the kept cell stands for c'_t: every cotangent there is masked
    return [c_prev, cells, a_i, a_o, a_f, a_c]
