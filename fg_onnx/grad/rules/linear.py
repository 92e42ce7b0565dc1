"""Dense layers and contractions: Gemm, MatMul, Einsum."""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass

import numpy as np
from onnx import helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import float_array, unbroadcast
from fg_onnx.grad.rules.shape import shape_of
from fg_onnx.graph.info import Dim


@vjp("Gemm")
def gemm_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    g = ctx.cotangent(gy)
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


# ---------------------------------------------------------------------------------------------
# MatMul


def _matrix_t(ctx: VJPContext, x: str, rank: int) -> str:
    """``x`` with its last two axes swapped."""
    perm = [*range(rank - 2), rank - 1, rank - 2]
    return ctx.b.Transpose(x, perm=perm)


def _batch_dims(ctx: VJPContext, y: str, count: int) -> tuple[Dim, ...]:
    """The leading (broadcast batch) dims of the MatMul output."""
    shape = ctx.shape(y)
    return tuple(shape[:count]) if shape is not None else (None,) * count


def _sum_to_operand(ctx: VJPContext, d: str, x: str, batch: tuple[Dim, ...]) -> str:
    """Sums a product shaped ``batch + x.shape[-2:]`` down to ``x`` (broadcast batch dims)."""
    x_shape = ctx.shape(x)
    tail: tuple[Dim, ...] = tuple(x_shape[-2:]) if x_shape is not None else (None, None)
    ctx.info.add_type(d, ctx.elem_type, [*batch, *tail])
    return unbroadcast(ctx, d, x, d)


@vjp("MatMul")
def matmul_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Batched, with broadcast batch dims summed back; 1-D operands as numpy promotes them.

    A 1-D left operand acts as a row and a 1-D right operand as a column; the axis added for
    it is summed away in its cotangent.
    """
    g = ctx.cotangent(gy)
    b = ctx.b
    a, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    ra, rw = ctx.rank(a), ctx.rank(w)
    if ra == 1 and rw == 1:  # dot product: g is a scalar
        return [b.Mul(g, w) if ctx.needs[0] else None, b.Mul(g, a) if ctx.needs[1] else None]
    batch = _batch_dims(ctx, y, max(ra, rw, 2) - 2)
    full_rank = len(batch) + 2
    # Promote to matrices: a 1-D left operand is a row, a 1-D right operand a column.
    g2 = b.Unsqueeze(g, b.ints(-2 if ra == 1 else -1)) if ra == 1 or rw == 1 else g
    da = dw = None
    if ctx.needs[0]:
        w_t = b.Unsqueeze(w, b.ints(0)) if rw == 1 else _matrix_t(ctx, w, rw)
        d = b.MatMul(g2, w_t)
        if ra == 1:
            da = b.ReduceSum(d, b.ints(range(full_rank - 1)), keepdims=0)
        else:
            da = _sum_to_operand(ctx, d, a, batch)
    if ctx.needs[1]:
        a_t = b.Unsqueeze(a, b.ints(1)) if ra == 1 else _matrix_t(ctx, a, ra)
        d = b.MatMul(a_t, g2)
        if rw == 1:
            axes = [*range(full_rank - 2), full_rank - 1]
            dw = b.ReduceSum(d, b.ints(axes), keepdims=0)
        else:
            dw = _sum_to_operand(ctx, d, w, batch)
    return [da, dw]


# ---------------------------------------------------------------------------------------------
# Einsum

ELLIPSIS = "..."


@dataclass(frozen=True)
class _Term:
    """One operand's subscripts: its labels and where the ellipsis sits among them."""

    labels: tuple[str, ...]
    ellipsis_at: int | None = None

    def text(self) -> str:
        """The subscript string."""
        if self.ellipsis_at is None:
            return "".join(self.labels)
        at = self.ellipsis_at
        return "".join(self.labels[:at]) + ELLIPSIS + "".join(self.labels[at:])


def _parse_term(ctx: VJPContext, text: str) -> _Term:
    head, dots, tail = text.partition(ELLIPSIS)
    labels = head + tail
    if ELLIPSIS in tail or not all(c in string.ascii_letters for c in labels):
        raise ctx.error(f"cannot parse Einsum subscripts {text!r}")
    return _Term(tuple(labels), len(head) if dots else None)


def _parse_equation(ctx: VJPContext, equation: str) -> tuple[list[_Term], _Term]:
    """Operand terms and the output term (implicit output per the ONNX/numpy rule)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = [_parse_term(ctx, t) for t in lhs.split(",")]
    if arrow:
        return terms, _parse_term(ctx, rhs)
    counts = Counter(label for term in terms for label in term.labels)
    implicit = tuple(sorted(label for label, n in counts.items() if n == 1))
    has_ellipsis = any(t.ellipsis_at is not None for t in terms)
    return terms, _Term(implicit, 0 if has_ellipsis else None)


def _axis_of(term: _Term, position: int, ellipsis_rank: int) -> int:
    """Tensor axis of the label at ``position`` of ``term``."""
    if term.ellipsis_at is not None and position >= term.ellipsis_at:
        return position + ellipsis_rank
    return position


def _eye(ctx: VJPContext, x: str, axis: int) -> str:
    """An identity matrix as large as axis ``axis`` of ``x``."""
    shape = ctx.shape(x)
    size = shape[axis] if shape is not None else None
    if isinstance(size, int):
        return float_array(ctx, np.eye(size))
    b = ctx.b
    dim = b.Shape(x, start=axis, end=axis + 1)
    zero = helper.make_tensor("zero", ctx.elem_type, [1], [0])
    return b.EyeLike(b.ConstantOfShape(b.Concat(dim, dim, axis=0), value=zero))


@dataclass
class _Plan:
    """The Einsum that gives one operand's cotangent, before free labels are put back."""

    operands: list[tuple[str, _Term]]
    result: _Term
    free_axes: list[int]


def _plan_operand(
    ctx: VJPContext, terms: list[_Term], out: _Term, i: int, g: str, ellipsis_rank: int
) -> _Plan:
    """Contracts the cotangent with the other operands onto operand ``i``'s labels.

    A label repeated in operand ``i`` (a diagonal) keeps its first occurrence; later ones get
    fresh labels tied to it by identity matrices. A label found nowhere else (summed away in
    the forward pass) cannot come out of the contraction: it is left out and broadcast later.
    """
    term = terms[i]
    used = {label for t in [*terms, out] for label in t.labels}
    spare = [c for c in string.ascii_letters if c not in used]
    labels: list[str] = []
    operands: list[tuple[str, _Term]] = [(g, out)]
    operands += [(ctx.input(j), t) for j, t in enumerate(terms) if j != i]
    for label in term.labels:
        if label in labels:
            fresh = spare.pop(0)
            first = _axis_of(term, term.labels.index(label), ellipsis_rank)
            operands.append((_eye(ctx, ctx.input(i), first), _Term((label, fresh))))
            label = fresh
        labels.append(label)
    elsewhere = {label for _, t in operands for label in t.labels}
    free = [p for p, label in enumerate(labels) if label not in elsewhere]
    kept = tuple(label for p, label in enumerate(labels) if p not in free)
    ellipsis_at = None
    if term.ellipsis_at is not None:
        if out.ellipsis_at is None:
            raise ctx.error("an ellipsis that is summed away is not supported")
        ellipsis_at = term.ellipsis_at - sum(p < term.ellipsis_at for p in free)
    elif out.ellipsis_at is not None:
        ellipsis_at = 0  # broadcast dims this operand lacks: kept in front, then summed
    return _Plan(
        operands, _Term(kept, ellipsis_at), [_axis_of(term, p, ellipsis_rank) for p in free]
    )


def _ellipsis_rank(ctx: VJPContext, name: str, term: _Term) -> int:
    return ctx.rank(name) - len(term.labels) if term.ellipsis_at is not None else 0


def _ellipsis_dims(ctx: VJPContext, name: str, term: _Term) -> list[Dim]:
    """The dims an operand's ellipsis covers (None where unknown)."""
    count = _ellipsis_rank(ctx, name, term)
    shape, at = ctx.shape(name), term.ellipsis_at
    if shape is None or at is None:
        return [None] * count
    return list(shape[at:at + count])


def _sum_ellipsis(ctx: VJPContext, r: str, at: int, terms: list[_Term], i: int) -> str:
    """Sums the result's ellipsis dims (all operands' broadcast) down to operand ``i``'s.

    The operands' shapes decide, not the output's: ONNX shape inference does not broadcast
    ellipsis dims.
    """
    b = ctx.b
    x, term = ctx.input(i), terms[i]
    dims = [_ellipsis_dims(ctx, ctx.input(j), t) for j, t in enumerate(terms)]
    x_dims = dims[i]
    e_x, e_all = len(x_dims), max(len(d) for d in dims)
    if e_all > e_x:
        r = b.ReduceSum(r, b.ints(range(at, at + e_all - e_x)), keepdims=0)
    axes: list[int] = []
    for k, x_dim in enumerate(x_dims):
        others = [d[len(d) - e_x + k] for d in dims if len(d) - e_x + k >= 0]
        if x_dim == 1:
            if any(d != 1 for d in others):
                axes.append(at + k)
        elif not all(d in (1, x_dim) for d in others) or x_dim is None:
            assert term.ellipsis_at is not None
            return _sum_where_one(ctx, r, x, term.ellipsis_at, e_x, at)
    return b.ReduceSum(r, b.ints(axes), keepdims=1) if axes else r


def _sum_where_one(ctx: VJPContext, r: str, x: str, x_at: int, count: int, at: int) -> str:
    """Sums ``r`` over the ellipsis axes where ``x`` has size 1 (decided at run time)."""
    b = ctx.b
    is_one = b.Equal(b.Shape(x, start=x_at, end=x_at + count), b.ints(1))
    axes = b.Add(b.Reshape(b.NonZero(is_one), b.ints(-1)), b.ints(at))
    return b.ReduceSum(r, axes, keepdims=1, noop_with_empty_axes=1)


def _einsum_operand_grad(
    ctx: VJPContext, terms: list[_Term], out: _Term, i: int, g: str
) -> str:
    x = ctx.input(i)
    plan = _plan_operand(ctx, terms, out, i, g, _ellipsis_rank(ctx, x, terms[i]))
    b = ctx.b
    if len(plan.operands) == 1 and plan.result.text() == out.text():
        r = g
    else:
        equation = ",".join(t.text() for _, t in plan.operands) + "->" + plan.result.text()
        r = b.Einsum(*(name for name, _ in plan.operands), equation=equation)
    if plan.result.ellipsis_at is not None:
        r = _sum_ellipsis(ctx, r, plan.result.ellipsis_at, terms, i)
    if plan.free_axes:
        r = b.Expand(b.Unsqueeze(r, b.ints(plan.free_axes)), shape_of(ctx, x))
    return r


@vjp("Einsum")
def einsum_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """An operand's cotangent is the Einsum of the output cotangent with the other operands."""
    g = ctx.cotangent(gy)
    terms, out = _parse_equation(ctx, str(ctx.attr("equation")))
    if len(terms) != len(ctx.node.input):
        raise ctx.error("the equation does not have one term per input")
    grads: list[str | None] = []
    for i, need in enumerate(ctx.needs):
        grads.append(_einsum_operand_grad(ctx, terms, out, i, g) if need else None)
    return grads

