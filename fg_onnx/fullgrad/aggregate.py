"""The FullGrad map, built inside the graph.

Each term ψ(v) = (|v| − min|v|) / (max(|v| − min|v|) + ε) is affine in |v| per sample, so its
channel sum is C·(mean_c |v| − min) / (max − min + ε): one reduction over channels instead of
a normalised full tensor (a mean, not a sum, so that float16 cannot overflow). Bilinear
resizing is linear too, so same-resolution terms are summed before a single Resize per
resolution. The map equals the reference formula exactly. Where sizes are known only at run
time, terms whose spatial dims carry the same names (one tensor's shape passed on by shape
inference) share a Resize, and every other term is resized alone to the input's run-time size.

A bias tap v = g ⊙ b with a per-channel bias never needs v itself: |v| = |g| ⊙ |b|, so
max|v| = max_c |b_c|·max|g_c|, likewise min, and Σ_c |v| is |g| times the vector |b| (a
MatMul). Only |g| is written; everything else reads it. Scaling |b| by 1/Σ|b| (and ε with it)
leaves ψ unchanged and bounds that MatMul by max|g|.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import Dim

EPSILON = 1e-6


@dataclass(frozen=True)
class RuntimeSize:
    """A map size known only when the model runs."""

    dims: tuple[Dim, Dim]
    """(H, W) as shape inference names them (ints where known)."""
    tensor: str
    """[2] int64: (H, W) at run time."""


MapSize = tuple[int, int] | RuntimeSize
"""The size of the map: static (H, W), or a :class:`RuntimeSize`."""


@dataclass(frozen=True)
class MapTerm:
    """A tensor shaped like an image batch whose ψ, summed over channels, enters the map."""

    tensor: str
    channel_axis: int
    channels: int
    spatial: tuple[Dim, Dim]
    """(h, w): ints, or the names shape inference gives them (None: unknown)."""
    weights: str | None = None
    """Non-negative 1-D [channels] factors: the term is |tensor| ⊙ weights along the channel
    axis (which must then be 1 or 3)."""
    epsilon: float = EPSILON
    """ψ's ε for this term: EPSILON times the factor by which the term's tensor and weights
    exceed the reference quantity (a gradient scale, weights divided by their sum)."""
    wide: bool = False
    """Whether ``tensor`` is float32 already in a float16 model (no widening needed)."""


def per_sample(b: GraphBuilder, tensor: str, batch: str) -> tuple[str, str]:
    """``tensor`` as [N, everything else], and that row length as a [1] int64 tensor; the
    batch must be the outermost factor of dim 0 (true for exporters' head-merged attention
    tensors too). The row length is size / N rather than -1, which Reshape cannot resolve for
    an empty batch."""
    row = b.Div(b.Reshape(b.Size(tensor), b.ints([1])), b.Max(batch, b.ints([1])))
    return b.Reshape(tensor, b.Concat(batch, row, axis=0)), row


def per_sample_sum(b: GraphBuilder, tensor: str, batch: str) -> str:
    """Σ over everything but the batch, as [N] (see :func:`per_sample`)."""
    return b.reduce("ReduceSum", per_sample(b, tensor, batch)[0], [1], keepdims=0)


Widen = Callable[[str], str]


def _normalised_channel_sum(b: GraphBuilder, term: MapTerm, batch: str, wide: Widen,
                            wide_elem: int) -> str:
    """Σ_c ψ, [N, h, w]. The reductions of the full tensor stay bounded (a channel mean for
    plain terms, weights summing to one for weighted ones) and the rest is computed after
    ``wide`` (float32 for float16 models, where ε would underflow)."""
    magnitude = b.Abs(term.tensor)
    if term.weights is None:
        flat = per_sample(b, magnitude, batch)[0]
        low = b.reduce("ReduceMin", flat, [1], keepdims=1)  # [N, 1]
        high = b.reduce("ReduceMax", flat, [1], keepdims=1)
        level = b.reduce("ReduceMean", magnitude, [term.channel_axis], keepdims=0)
        mean_over = term.channels  # level is Σ_c / mean_over
    else:
        low, high = (_weighted_extreme(b, op, magnitude, term) for op in ("ReduceMin", "ReduceMax"))
        level, mean_over = _weighted_channel_sum(b, magnitude, term, batch), 1
    if not term.wide:
        level, low, high = wide(level), wide(low), wide(high)
    span3 = b.Unsqueeze(b.Sub(high, low), b.ints([2]))
    floor = low if mean_over == term.channels else b.Mul(
        low, b.scalar(float(term.channels / mean_over), wide_elem))
    shifted = b.Sub(level, b.Unsqueeze(floor, b.ints([2])))  # [N, h, w]
    ratio = b.Div(shifted, b.Add(span3, b.scalar(term.epsilon, wide_elem)))
    if mean_over == 1:
        return ratio
    return b.Mul(ratio, b.scalar(float(mean_over), wide_elem))


def _weighted_extreme(b: GraphBuilder, op: str, magnitude: str, term: MapTerm) -> str:
    """min or max of |tensor| ⊙ weights per sample, [N, 1] (weights ≥ 0 commute with both)."""
    assert term.weights is not None
    spatial_axes = [a for a in (1, 2, 3) if a != term.channel_axis]
    per_channel = b.reduce(op, magnitude, spatial_axes, keepdims=0)  # [N, C]
    return b.reduce(op, b.Mul(per_channel, term.weights), [1], keepdims=1)


def _weighted_channel_sum(b: GraphBuilder, magnitude: str, term: MapTerm, batch: str) -> str:
    """Σ_c weights_c · magnitude_c as [N, h, w]: a batched MatMul over a [N, C, h·w] (or
    [N, h·w, C]) view. The weights are expanded to the batch because onnxruntime's MatMul
    refuses to broadcast against an empty batch; the 0 in the shapes copies the batch (and
    h·w is a product of sizes, not -1, which an empty batch leaves unresolved)."""
    assert term.weights is not None
    nchw = term.channel_axis == 1
    pixels, spatial = _pixels_and_spatial(b, magnitude, term)
    per_sample_shape = [1, term.channels] if nchw else [term.channels, 1]
    weights = b.Expand(b.Reshape(term.weights, b.ints(per_sample_shape)),
                       b.Concat(batch, b.ints(per_sample_shape), axis=0))
    if nchw:
        view = _shape_of_parts(b, [0, term.channels, pixels])
        summed = b.MatMul(weights, b.Reshape(magnitude, view))
    else:
        summed = b.MatMul(b.Reshape(magnitude, _shape_of_parts(b, [0, pixels, term.channels])),
                          weights)
    return b.Reshape(summed, _shape_of_parts(b, [0, *spatial]))


def _pixels_and_spatial(b: GraphBuilder, magnitude: str,
                        term: MapTerm) -> tuple[int | str, list[int | str]]:
    """h·w and [h, w] of a term: ints when static, else [1] int64 tensors (h, w as one [2])."""
    height, width = term.spatial
    if isinstance(height, int) and isinstance(width, int):
        return height * width, [height, width]
    start = 2 if term.channel_axis == 1 else 1
    sizes = b.Shape(magnitude, start=start, end=start + 2)
    return b.ReduceProd(sizes, keepdims=1), [sizes]


def _shape_of_parts(b: GraphBuilder, parts: Sequence[int | str]) -> str:
    """A 1-D int64 shape from ints and int64 tensors: a constant when all are ints."""
    if all(isinstance(p, int) for p in parts):
        return b.ints([int(p) for p in parts])
    return b.Concat(*(b.ints([p]) if isinstance(p, int) else p for p in parts), axis=0)


def saliency_map(b: GraphBuilder, terms: Sequence[MapTerm], batch: str, size: MapSize,
                 elem: int, wide: Widen = lambda tensor: tensor) -> str:
    """[N, H, W]: Σ over terms of ψ summed over channels, resized (bilinear, align_corners).

    ``wide`` turns each term's per-sample reductions to ``elem`` (float32 for float16 models,
    see fg_onnx.fullgrad.precision), in which the rest is computed."""
    by_size: dict[object, list[str]] = {}
    for term in terms:
        total = _normalised_channel_sum(b, term, batch, wide, elem)
        by_size.setdefault(_size_key(term.spatial, total), []).append(total)
    target = size if isinstance(size, tuple) else size.dims
    resized = []
    for spatial, parts in by_size.items():
        total = b.add_all(parts)
        resized.append(total if spatial == target else resize_map(b, total, batch, size))
    return b.add_all(resized)


def _size_key(spatial: tuple[Dim, Dim], total: str) -> object:
    """Terms with equal keys have equal sizes: the dims themselves when each is known or
    named, else the term's own tensor (it is resized alone)."""
    return spatial if all(d is not None for d in spatial) else total


def resize_map(b: GraphBuilder, maps: str, batch: str, size: MapSize) -> str:
    """[N, h, w] -> [N, H, W] by bilinear interpolation with aligned corners (as the
    reference FullGrad code resizes)."""
    if isinstance(size, tuple):
        sizes = b.Concat(batch, b.ints([1, *size]), axis=0)
    else:
        sizes = b.Concat(batch, b.ints([1]), size.tensor, axis=0)
    image = b.Unsqueeze(maps, b.ints([1]))
    up = b.Resize(image, "", "", sizes, mode="linear",
                  coordinate_transformation_mode="align_corners")
    return b.Squeeze(up, b.ints([1]))


def channel_abs_sum(b: GraphBuilder, tensor: str, channel_axis: int) -> str:
    """Σ_c |tensor| over the channel axis: [N, H, W] (the gradient-type maps)."""
    return b.reduce("ReduceSum", b.Abs(tensor), [channel_axis], keepdims=0)
