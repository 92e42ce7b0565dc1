"""Ops that move, select or copy elements without arithmetic: reshapes, transposes, concatenation,
splitting, slicing, gathering, padding, broadcasting, tiling and depth/space rearrangements.

Selections whose geometry is awkward to invert (strided or reversed slices, Gather, reflect and
edge padding) share one exact construction: the op is applied to a tensor holding each element's
flat index, which yields where every output element came from, and the cotangent is
scatter-added back to those positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from onnx import TensorProto, helper

from fg_onnx.grad.registry import Cotangents, VJPContext, vjp
from fg_onnx.grad.rules._common import normalize_axis, unbroadcast, zeros_like

INT64_MAX = np.iinfo(np.int64).max



def _only_first(ctx: VJPContext, dx: str | None) -> list[str | None]:
    """``dx`` for the data input, None for the others (shapes, axes, indices)."""
    return [dx if ctx.needs[0] else None] + [None] * (len(ctx.node.input) - 1)


def shape_of(ctx: VJPContext, x: str) -> str:
    """The shape of ``x`` as a 1-D int64 tensor: a constant when static, else ``Shape(x)``."""
    shape = ctx.static_shape(x)
    return ctx.b.ints(shape) if shape is not None else ctx.b.Shape(x)


def reshape_like(ctx: VJPContext, g: str, x: str) -> str:
    """``g`` reshaped to the shape of ``x`` (zero-sized dims taken literally)."""
    return ctx.b.Reshape(g, shape_of(ctx, x), allowzero=1)


def _dim(ctx: VJPContext, x: str, axis: int) -> str:
    """Dim ``axis`` of ``x`` as a 1-element int64 tensor."""
    shape = ctx.shape(x)
    size = shape[axis] if shape is not None else None
    if isinstance(size, int):
        return ctx.b.ints([size])
    return ctx.b.Shape(x, start=axis, end=axis + 1)


def _shape_vector(ctx: VJPContext, parts: Sequence[int | str]) -> str:
    """A 1-D shape from ints and 1-element int64 tensors."""
    if all(isinstance(p, int) for p in parts):
        return ctx.b.ints([int(p) for p in parts])
    pieces = [ctx.b.ints([p]) if isinstance(p, int) else p for p in parts]
    return ctx.b.Concat(*pieces, axis=0)


def _zero_tensor(ctx: VJPContext) -> TensorProto:
    return helper.make_tensor("zero", ctx.elem_type, [1], [0])


def scatter_through(
    ctx: VJPContext, g: str, x: str, select: Callable[[str], str], repeats: bool
) -> str:
    """Cotangent of ``x`` for an op that only selects elements of ``x`` into ``g``'s shape.

    ``select`` applies the op to another tensor shaped like ``x``; applied to the flat indices
    of ``x`` it tells where each element of the output came from. ``repeats`` says whether an
    element may be selected more than once (its cotangents then add up).
    """
    b = ctx.b
    size = b.Size(x)
    flat_index = b.Range(b.const(np.array(0, np.int64)), size, b.const(np.array(1, np.int64)))
    positions = select(b.Reshape(flat_index, shape_of(ctx, x)))
    zeros = b.ConstantOfShape(b.Reshape(size, b.ints(1)), value=_zero_tensor(ctx))
    scattered = b.ScatterElements(
        zeros, b.Reshape(positions, b.ints(-1)), b.Reshape(g, b.ints(-1)), axis=0,
        reduction="add" if repeats else None,
    )
    return reshape_like(ctx, scattered, x)


# ---------------------------------------------------------------------------------------------
# Reshapes and transposes


@vjp("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Reshapes keep the element order: the cotangent is reshaped back."""
    return _only_first(ctx, reshape_like(ctx, ctx.cotangent(gy), ctx.input(0)))


@vjp("Transpose")
def transpose_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Transpose by the inverse permutation."""
    perm = ctx.attr("perm")
    perm = list(perm) if perm else list(reversed(range(ctx.rank(ctx.input(0)))))
    return [ctx.b.Transpose(ctx.cotangent(gy), perm=[int(p) for p in np.argsort(perm)])]


@vjp("DepthToSpace")
def depth_to_space_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """The inverse rearrangement: SpaceToDepth for DCR mode, reshape-transpose for CRD."""
    g, x, b = ctx.cotangent(gy), ctx.input(0), ctx.b
    block = int(ctx.attr("blocksize"))
    if str(ctx.attr("mode", "DCR")) == "DCR":
        return [b.SpaceToDepth(g, blocksize=block)]
    # CRD: y = reshape(transpose(reshape(x, [N, C', b, b, H, W]), [0, 1, 4, 2, 5, 3])).
    shape = ctx.shape(x)
    if shape is not None and all(isinstance(d, int) for d in shape[1:]):
        channels, height, width = (int(d) for d in shape[1:])  # type: ignore[arg-type]
        split = b.ints([-1, channels // (block * block), height, block, width, block])
    else:
        split = _shape_vector(ctx, [
            -1, ctx.b.Shape(g, start=1, end=2), _dim(ctx, x, 2), block, _dim(ctx, x, 3), block,
        ])
    blocks = b.Transpose(b.Reshape(g, split), perm=[0, 1, 3, 5, 2, 4])
    return [reshape_like(ctx, blocks, x)]


@vjp("SpaceToDepth")
def space_to_depth_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """SpaceToDepth is the inverse permutation of DepthToSpace in DCR mode."""
    return [ctx.b.DepthToSpace(ctx.cotangent(gy), blocksize=int(ctx.attr("blocksize")), mode="DCR")]


# ---------------------------------------------------------------------------------------------
# Concat and Split


@vjp("Concat")
def concat_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Split of the cotangent along the axis, with static or run-time sizes."""
    g, inputs = ctx.cotangent(gy), list(ctx.node.input)
    if len(inputs) == 1:
        return [g]
    axis = normalize_axis(int(ctx.attr("axis")), ctx.rank(ctx.output(0)))
    static = [ctx.shape(x) for x in inputs]
    if all(s is not None and isinstance(s[axis], int) for s in static):
        sizes = ctx.b.ints([int(s[axis]) for s in static])  # type: ignore[index,arg-type]
    else:
        sizes = ctx.b.Concat(*(_dim(ctx, x, axis) for x in inputs), axis=0)
    parts = ctx.b.op_multi("Split", g, sizes, outputs=len(inputs), axis=axis)
    return [part if need else None for part, need in zip(parts, ctx.needs, strict=True)]


@vjp("Split")
def split_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Outputs that do not reach the seed contribute zeros to the concatenated cotangent."""
    parts = [
        g if g is not None else zeros_like(ctx, y)
        for g, y in zip(gy, ctx.node.output, strict=True)
    ]
    dx = ctx.b.Concat(*parts, axis=int(ctx.attr("axis", 0)))
    return _only_first(ctx, dx)


# ---------------------------------------------------------------------------------------------
# Slice, Gather, GatherElements


def _slice_pads(ctx: VJPContext) -> list[int] | None:
    """Pads that undo a unit-step Slice with constant parameters and static sliced dims."""
    starts, ends = ctx.const_ints(1), ctx.const_ints(2)
    if starts is None or ends is None:
        return None
    axes = ctx.const_ints(3) if ctx.has_input(3) else list(range(len(starts)))
    steps = ctx.const_ints(4) if ctx.has_input(4) else [1] * len(starts)
    x = ctx.input(0)
    shape, rank = ctx.shape(x), ctx.rank(x)
    if axes is None or steps is None or shape is None or any(s != 1 for s in steps):
        return None
    pads = [0] * (2 * rank)
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis = normalize_axis(axis, rank)
        dim = shape[axis]
        if not isinstance(dim, int):
            return None
        begin = min(max(start + dim if start < 0 else start, 0), dim)
        stop = min(max(end + dim if end < 0 else end, 0), dim)
        pads[axis] = begin
        pads[rank + axis] = dim - begin - max(stop - begin, 0)
    return pads


def _run_time_slice_pads(ctx: VJPContext) -> str | None:
    """The pads of :func:`_slice_pads` (int64 [2·rank]) computed in the graph, for sliced dims
    known only at run time; None for other steps or parameters that are not constant."""
    starts, ends = ctx.const_ints(1), ctx.const_ints(2)
    if starts is None or ends is None:
        return None
    axes = ctx.const_ints(3) if ctx.has_input(3) else list(range(len(starts)))
    steps = ctx.const_ints(4) if ctx.has_input(4) else [1] * len(starts)
    rank = ctx.info.rank(ctx.input(0))
    if axes is None or steps is None or any(s != 1 for s in steps) or rank is None:
        return None
    b, x = ctx.b, ctx.input(0)
    begins, tails = [b.ints([0])] * rank, [b.ints([0])] * rank
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis = normalize_axis(axis, rank)
        dim = _dim(ctx, x, axis)
        begin, stop = _clamped_index(ctx, start, dim), _clamped_index(ctx, end, dim)
        begins[axis] = begin
        tails[axis] = b.Sub(b.Sub(dim, begin), b.Max(b.Sub(stop, begin), b.ints([0])))
    return b.Concat(*begins, *tails, axis=0)


def _clamped_index(ctx: VJPContext, index: int, dim: str) -> str:
    """Slice's index into a dim of run-time size ``dim`` ([1] int64): from the end when
    negative, clamped to [0, dim]."""
    b = ctx.b
    shifted = b.Add(dim, b.ints([index])) if index < 0 else b.ints([index])
    return b.Min(b.Max(shifted, b.ints([0])), dim)


@vjp("Slice")
def slice_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Unit steps: zero-pad the cotangent back. Other steps or parameters known only at run
    time: scatter it."""
    g, x = ctx.cotangent(gy), ctx.input(0)
    pads = _slice_pads(ctx)
    if pads is not None:
        return _only_first(ctx, ctx.b.Pad(g, ctx.b.ints(pads)))
    run_time_pads = _run_time_slice_pads(ctx)
    if run_time_pads is not None:
        return _only_first(ctx, ctx.b.Pad(g, run_time_pads))
    params = list(ctx.node.input[1:])
    dx = scatter_through(ctx, g, x, lambda index: ctx.b.Slice(index, *params), repeats=False)
    return _only_first(ctx, dx)


def _distinct_indices(ctx: VJPContext, indices: str, dim: object) -> bool:
    """Whether constant indices select each position at most once."""
    value = ctx.const(indices)
    if value is None or not isinstance(dim, int):
        return False
    flat = np.asarray(value).reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + dim, flat)
    return len(np.unique(flat)) == flat.size


def _gather_axis(ctx: VJPContext, x: str, indices: str) -> tuple[int, bool]:
    """The gather axis, and whether the indices may repeat (then scatters must add)."""
    axis = normalize_axis(int(ctx.attr("axis", 0)), ctx.rank(x))
    shape = ctx.shape(x)
    return axis, not _distinct_indices(ctx, indices, None if shape is None else shape[axis])


@vjp("Gather")
def gather_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Scatter of the cotangent back to the gathered positions; repeated indices add up."""
    g, x, indices = ctx.cotangent(gy), ctx.input(0), ctx.input(1)
    axis, repeats = _gather_axis(ctx, x, indices)
    dx = scatter_through(
        ctx, g, x, lambda index: ctx.b.Gather(index, indices, axis=axis), repeats=repeats
    )
    return [dx, None]


@vjp("GatherElements")
def gather_elements_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """ScatterElements with the same indices; repeated indices add up."""
    g, x, indices = ctx.cotangent(gy), ctx.input(0), ctx.input(1)
    axis, repeats = _gather_axis(ctx, x, indices)
    dx = ctx.b.ScatterElements(
        zeros_like(ctx, x), indices, g, axis=axis, reduction="add" if repeats else None
    )
    return [dx, None]


# ---------------------------------------------------------------------------------------------
# Pad, Expand, Tile


def _unpad_static(ctx: VJPContext, g: str, pads: list[int], axes: str | None) -> str:
    b, half = ctx.b, len(pads) // 2
    begins, ends = pads[:half], pads[half:]
    # An end pad p > 0 is cropped with end = -p; p <= 0 keeps everything up to the end.
    starts = [max(p, 0) for p in begins]
    stops = [-p if p > 0 else INT64_MAX for p in ends]
    cropped = b.Slice(g, b.ints(starts), b.ints(stops), axes or b.ints(range(half)))
    if any(p < 0 for p in pads):
        refill = [max(-p, 0) for p in pads]
        cropped = b.Pad(cropped, b.ints(refill), *_axes_input(axes))
    return cropped


def _axes_input(axes: str | None) -> list[str | None]:
    """Trailing inputs of a Pad node: its axes only when given (opset 18 added them)."""
    return [None, axes] if axes is not None else []


def _unpad_dynamic(ctx: VJPContext, g: str, half: int, axes: str | None) -> str:
    b, zero = ctx.b, ctx.b.ints(0)
    begins = b.Slice(ctx.input(1), b.ints(0), b.ints(half))
    ends = b.Slice(ctx.input(1), b.ints(half), b.ints(2 * half))
    stops = b.Where(b.Greater(ends, zero), b.Neg(ends), b.ints([INT64_MAX] * half))
    cropped = b.Slice(g, b.Max(begins, zero), stops, axes or b.ints(range(half)))
    refill = b.Max(b.Neg(ctx.input(1)), zero)
    return b.Pad(cropped, refill, *_axes_input(axes))


def _unpad_constant(ctx: VJPContext, g: str) -> str:
    """Adjoint of constant padding: crop what was added, zero-fill what was cropped."""
    pads = ctx.const_ints(1)
    if ctx.has_input(3):
        axes_value = ctx.const_ints(3)
        if axes_value is None:
            raise ctx.error("its axes input is not a constant")
        half, axes = len(axes_value), ctx.input(3)
    else:
        half, axes = ctx.rank(ctx.input(0)), None
    if pads is not None:
        return _unpad_static(ctx, g, pads, axes)
    return _unpad_dynamic(ctx, g, half, axes)


@vjp("Pad")
def pad_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Constant mode crops the cotangent; reflect, edge and wrap scatter-add it back."""
    g, x = ctx.cotangent(gy), ctx.input(0)
    mode = str(ctx.attr("mode", "constant"))
    grads: list[str | None] = [None] * len(ctx.node.input)
    if mode == "constant":
        inner = _unpad_constant(ctx, g)
        if ctx.needs[0]:
            grads[0] = inner
        if len(ctx.needs) > 2 and ctx.needs[2]:
            # The padding value fills every output element that is not copied from x. It may
            # be 0-D or [1].
            b = ctx.b
            total = b.Sub(b.ReduceSum(g, keepdims=0), b.ReduceSum(inner, keepdims=0))
            grads[2] = b.Reshape(total, b.Shape(ctx.input(2)))
        return grads
    axes = _axes_input(ctx.input(3) if ctx.has_input(3) else None)
    grads[0] = scatter_through(
        ctx, g, x, lambda index: ctx.b.Pad(index, ctx.input(1), *axes, mode=mode), repeats=True
    )
    return grads


@vjp("Expand")
def expand_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Sum over the broadcast axes."""
    return [unbroadcast(ctx, ctx.cotangent(gy), ctx.input(0), ctx.output(0)), None]


@vjp("Tile")
def tile_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
    """Output axis i is ``repeats[i]`` copies of x's axis i: view it as (repeats, dim), sum."""
    g, x, b = ctx.cotangent(gy), ctx.input(0), ctx.b
    rank = ctx.rank(x)
    repeats = ctx.const_ints(1)
    x_shape = ctx.static_shape(x)
    if repeats is not None and x_shape is not None:
        pairs = b.ints([v for pair in zip(repeats, x_shape, strict=True) for v in pair])
    else:
        columns = [b.Unsqueeze(ctx.input(1), b.ints(1)), b.Unsqueeze(b.Shape(x), b.ints(1))]
        pairs = b.Reshape(b.Concat(*columns, axis=1), b.ints(-1))
    summed = b.ReduceSum(b.Reshape(g, pairs), b.ints(range(0, 2 * rank, 2)), keepdims=0)
    return [summed, None]
