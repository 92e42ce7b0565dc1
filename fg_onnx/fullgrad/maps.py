"""The table of maps an augmented model can compute in ``fg_saliency``, one entry per map.

Each entry builds its map from what the augment pass has made (:class:`MapInputs`) and says
whether FullGrad's completeness check applies to it and which options it reads. The methods
that combine several runs of one of these maps are in fg_onnx.methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fg_onnx.choices import GraphMethod
from fg_onnx.errors import FgOnnxError, UnsupportedModelError
from fg_onnx.fullgrad.aggregate import (
    EPSILON,
    MapSize,
    MapTerm,
    channel_abs_sum,
    saliency_map,
)
from fg_onnx.fullgrad.cam import cam_map
from fg_onnx.fullgrad.precision import Numerics
from fg_onnx.fullgrad.sizes import canonical
from fg_onnx.fullgrad.taps import Tap
from fg_onnx.graph.builder import GraphBuilder


@dataclass(frozen=True)
class MapInputs:
    """What a map is built from."""

    b: GraphBuilder
    numerics: Numerics
    input: str
    """The explained input x."""
    input_grad: str
    """∂score/∂x, unscaled (float32 in a float16 model, as the input is small)."""
    channel_axis: int
    channels: int | str | None
    """The input's channel count (a name or None when not fixed)."""
    size: MapSize
    """The map's (H, W): the input's (at run time where it is not fixed)."""
    batch: str
    """[1] int64: the batch size."""
    taps: Sequence[Tap]
    cam: tuple[str, str | None] | None = None
    """(activation, its gradient or None) at the CAM layer, for the maps that weigh one."""
    equal_dims: Mapping[str, str] = field(default_factory=dict)
    """Symbolic spatial dims known to be equal (fg_onnx.fullgrad.sizes), for sharing Resizes
    where sizes are known only at run time."""


MapBuilder = Callable[[MapInputs], str]


@dataclass(frozen=True)
class GraphMap:
    """One map an augmented model can hold."""

    name: GraphMethod
    build: MapBuilder
    """Adds the [N, H, W] map to the graph and returns its name."""
    summary: str
    completeness: bool
    """Whether the map is FullGrad's decomposition, so that the completeness error of
    ``fg_input_grad`` and ``fg_bias_total`` describes it."""
    reads_cam_layer: bool = False
    """Whether it weighs an activation (``cam_layer``): the backward pass must reach it."""


def _fullgrad(m: MapInputs) -> str:
    return _fullgrad_terms(m, lambda tap: _bias_term(m.b, tap))


def _simple_fullgrad(m: MapInputs) -> str:
    # The paper code's variant: ψ of the layer gradient alone, without the bias factor.
    return _fullgrad_terms(m, lambda tap: map_term(tap, tap.gradient))


def _fullgrad_terms(m: MapInputs, tap_term: Callable[[Tap], MapTerm | None]) -> str:
    if not isinstance(m.channels, int):
        raise UnsupportedModelError(f"the channel count of input {m.input!r} is not fixed")
    numerics = m.numerics
    x_grad = m.b.Mul(m.input_grad, numerics.wide(m.input))
    spatial = m.size if isinstance(m.size, tuple) else m.size.dims
    terms = [MapTerm(x_grad, m.channel_axis, m.channels, spatial, wide=numerics.half)]
    for tap in m.taps:  # the layer gradients carry the gradient scale, and ε with them
        term = tap_term(tap)
        if term is not None:
            terms.append(replace(term, epsilon=term.epsilon * numerics.scale,
                                 spatial=canonical(term.spatial, m.equal_dims)))
    return saliency_map(m.b, terms, m.batch, m.size, numerics.elem, numerics.wide)


def _gradient(m: MapInputs) -> str:
    return channel_abs_sum(m.b, m.input_grad, m.channel_axis)


def _gradient_x_input(m: MapInputs) -> str:
    x_grad = m.b.Mul(m.input_grad, m.numerics.wide(m.input))
    return channel_abs_sum(m.b, x_grad, m.channel_axis)


def _cam(plus: bool) -> MapBuilder:
    def build(m: MapInputs) -> str:
        assert m.cam is not None
        activation, gradient = m.cam
        if gradient is None:
            raise UnsupportedModelError(
                f"the explained score does not depend on --cam-layer {activation!r}")
        numerics = m.numerics
        return cam_map(m.b, numerics.wide(activation), numerics.unscaled(gradient), plus,
                       m.batch, m.size, numerics.elem)
    return build


def map_term(tap: Tap, tensor: str | None) -> MapTerm | None:
    """The map term of ``tensor`` (the tap's product or gradient, shaped like the layer
    output) when it is an image-like [N, C, h, w] (or NHWC) batch with a known channel count;
    h and w may be known only at run time."""
    if tensor is None or tap.rank != 4 or tap.shape is None:
        return None
    axis = next(a for a in (tap.map_axis, tap.channel_axis, 1) if a is not None)
    if axis == 0:
        return None
    spatial = [tap.shape[a] for a in range(1, 4) if a != axis]
    channels = tap.shape[axis]
    if not isinstance(channels, int):
        return None
    return MapTerm(tensor, axis, channels, (spatial[0], spatial[1]))


def _bias_term(b: GraphBuilder, tap: Tap) -> MapTerm | None:
    """ψ of bias ⊙ gradient; None where it adds nothing to the map (ψ of a zero bias is
    exactly zero). A per-channel bias needs only |gradient| and the bias's magnitudes."""
    term = map_term(tap, tap.product)
    bias = tap.bias
    if term is None or bias is None or bias.vector is None or (
            term.channel_axis not in (1, 3) or term.channel_axis != bias.channel_axis):
        return term
    if tap.bias_is_zero:
        return None
    assert tap.gradient is not None
    if bias.value is None:
        return replace(term, tensor=tap.gradient, weights=b.Abs(bias.vector))
    magnitude = np.abs(bias.value.astype(np.float64))
    total = float(magnitude.sum())  # weights summing to 1 bound the MatMul (aggregate.py)
    weights = b.const((magnitude / total).astype(bias.value.dtype), hint="abs_bias")
    return replace(term, tensor=tap.gradient, weights=weights, epsilon=EPSILON / total)


GRAPH_MAPS: dict[str, GraphMap] = {m.name: m for m in (
    GraphMap("fullgrad", _fullgrad, "FullGrad: ψ(x·∇x) + Σ ψ(bias·∇bias)", completeness=True),
    GraphMap("simple-fullgrad", _simple_fullgrad,
             "FullGrad without the bias factor: ψ(x·∇x) + Σ ψ(∇ layer output)",
             completeness=False),
    GraphMap("gradient", _gradient, "input gradient: Σ_c |∇x|", completeness=False),
    GraphMap("gradient-x-input", _gradient_x_input, "Σ_c |x·∇x|", completeness=False),
    GraphMap("grad-cam", _cam(plus=False), "Grad-CAM at the last convolution",
             completeness=False, reads_cam_layer=True),
    GraphMap("grad-cam++", _cam(plus=True), "Grad-CAM++ at the last convolution",
             completeness=False, reads_cam_layer=True),
)}

CAM_LAYER_MAPS = tuple(name for name, m in GRAPH_MAPS.items() if m.reads_cam_layer)


def graph_map(name: str) -> GraphMap:
    """The map called ``name``; a one-line error naming the others when unknown."""
    try:
        return GRAPH_MAPS[name]
    except KeyError:
        raise FgOnnxError(
            f"unknown in-graph method {name!r}; the augmented model computes one of "
            f"{', '.join(GRAPH_MAPS)} (smoothgrad, smooth-fullgrad and integrated-gradients "
            "average several runs of one: use fg-onnx explain --method)") from None
