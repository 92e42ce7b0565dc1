"""Indexed reads and writes: GatherND, ScatterND, ScatterElements, Compress, ReverseSequence
and MaxUnpool.

GatherND takes the exact construction the other selections use (``scatter_through``): the op
is applied to each element's flat index, which says where every output element came from, so
``batch_dims`` and negative indices need no special case. A scatter without reduction
overwrites: the overwritten elements of ``data`` get no cotangent and each update gets the
cotangent of the position it landed on (indices of such a scatter are distinct by the spec).
"""

from __future__ import annotations

from collections.abc import Callable

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import zeros_like
from fg_onnx.grad.rules.shape import scatter_through

SUPPORTED_REDUCTIONS = ("none", "add", "mul")


def _g(gy: Cotangents) -> str:
    g = gy[0]
    assert g is not None
    return g


@vjp("GatherND")
def gather_nd_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Scatter-add of the cotangent back to the gathered positions (any batch_dims)."""
    indices, batch_dims = ctx.input(1), int(ctx.attr("batch_dims", 0))
    dx = scatter_through(
        ctx, _g(gy), ctx.input(0),
        lambda index: ctx.b.GatherND(index, indices, batch_dims=batch_dims), repeats=True,
    )
    return [dx, None]


def _scatter_vjp(
    ctx: VJPContext, g: str, scatter: Callable[..., str], gather: Callable[[str], str],
) -> list[str | None]:
    """Cotangents of (data, indices, updates) for a scatter with ``reduction``."""
    data, indices, updates = ctx.input(0), ctx.input(1), ctx.input(2)
    reduction = str(ctx.attr("reduction", "none"))
    if reduction not in SUPPORTED_REDUCTIONS:
        raise ctx.error(f"reduction={reduction!r} is not supported (none, add and mul are)")
    if reduction == "mul" and ctx.needs[2]:
        raise ctx.error("reduction='mul' with computed updates is not supported; only its "
                        "data input may depend on the explained input")
    d_data: str | None = None
    if ctx.needs[0]:
        if reduction == "none":
            d_data = scatter(g, indices, zeros_like(ctx, updates))
        elif reduction == "add":
            d_data = g
        else:  # y = data * Π updates at each position, so dy/d data is that product.
            ones = ctx.b.Add(zeros_like(ctx, data), ctx.scalar(1.0))
            d_data = ctx.b.Mul(g, scatter(ones, indices, updates, reduction="mul"))
    d_updates = gather(g) if ctx.needs[2] else None
    return [d_data, None, d_updates]


@vjp("ScatterND")
def scatter_nd_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """updates: GatherND of the cotangent; data: the cotangent, written positions zeroed.

    With reduction add, data gets the cotangent itself; with mul, times the scattered
    product."""
    indices = ctx.input(1)
    return _scatter_vjp(ctx, _g(gy), ctx.b.ScatterND,
                        lambda g: ctx.b.GatherND(g, indices))


@vjp("ScatterElements")
def scatter_elements_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """updates: GatherElements of the cotangent; data: the cotangent, written positions zeroed.

    With reduction add, data gets the cotangent itself; with mul, times the scattered
    product."""
    indices, axis = ctx.input(1), int(ctx.attr("axis", 0))

    def scatter(*inputs: str, reduction: str | None = None) -> str:
        return ctx.b.ScatterElements(*inputs, axis=axis, reduction=reduction)

    return _scatter_vjp(ctx, _g(gy), scatter,
                        lambda g: ctx.b.GatherElements(g, indices, axis=axis))


@vjp("Compress")
def compress_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Each kept element's cotangent goes back to where it was kept from."""
    condition, axis = ctx.input(1), ctx.attr("axis")
    dx = scatter_through(
        ctx, _g(gy), ctx.input(0),
        lambda index: ctx.b.Compress(index, condition, axis=axis), repeats=False,
    )
    return [dx, None]


@vjp("ReverseSequence")
def reverse_sequence_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Reversing the same prefixes again puts every cotangent back (an involution)."""
    attrs = {"batch_axis": int(ctx.attr("batch_axis", 1)),
             "time_axis": int(ctx.attr("time_axis", 0))}
    return [ctx.b.ReverseSequence(_g(gy), ctx.input(1), **attrs), None]


@vjp("MaxUnpool")
def max_unpool_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """x[i] went to flat output position indices[i]: its cotangent is read back from there.

    The indices are MaxPool's, distinct where windows are disjoint."""
    b, x = ctx.b, ctx.input(0)
    picked = b.Gather(b.Reshape(_g(gy), b.ints([-1])), b.Reshape(ctx.input(1), b.ints([-1])))
    return [b.Reshape(picked, b.Shape(x)), None, None][:len(ctx.node.input)]
