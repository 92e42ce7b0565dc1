"""The method table: every saliency method, one entry each.

A method is either one of the maps the augmented model computes (fg_onnx.fullgrad.maps,
which lists those entries) or a run-time method: a runner that combines several runs of
one of those maps. Each entry says which completeness check its results carry (none for
maps that are not a complete decomposition of the score) and which settings it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fg_onnx.choices import GraphMethod
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.maps import GRAPH_MAPS
from fg_onnx.methods.integrated import integrated_gradients
from fg_onnx.methods.params import MethodParams
from fg_onnx.methods.smooth import smooth
from fg_onnx.runtime.session import Explanation, FullGrad

Runner = Callable[[FullGrad, np.ndarray, Explanation, MethodParams], Explanation]
"""(session, inputs, one-pass explanation with the targets fixed, params) -> explanation."""

Completeness = Literal["fullgrad", "integrated-gradients"]
"""Which check ``completeness_error`` holds: FullGrad's Σ x·∇x + Σ bias·∇bias = score, or
integrated gradients' Σ IG = f(x) − f(0)."""


@dataclass(frozen=True)
class Method:
    """One saliency method."""

    name: str
    graph: GraphMethod
    """The map the augmented model computes in ``fg_saliency`` (AugmentOptions.method)."""
    runner: Runner | None
    """What combines several runs of it; None when one pass is the map."""
    completeness: Completeness | None
    """The check its ``completeness_error`` holds; None: the map has none."""
    summary: str
    settings: tuple[str, ...] = ()
    """The options it reads: AugmentOptions fields (cam_layer) and MethodParams fields."""


def _table() -> dict[str, Method]:
    in_graph = [
        Method(m.name, m.name, None, "fullgrad" if m.completeness else None, m.summary,
               ("cam_layer",) if m.reads_cam_layer else ())
        for m in GRAPH_MAPS.values()
    ]
    run_time = [
        Method("smooth-fullgrad", "fullgrad", smooth, None,
               "FullGrad averaged over noisy copies", ("samples", "noise", "seed")),
        Method("smoothgrad", "gradient", smooth, None,
               "input gradient averaged over noisy copies", ("samples", "noise", "seed")),
        Method("integrated-gradients", "gradient", integrated_gradients,
               "integrated-gradients", "Σ_c |(x − 0)·mean ∇ along the path|", ("steps",)),
    ]
    return {m.name: m for m in [*in_graph, *run_time]}


METHODS = _table()
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``; a one-line error listing the others when unknown."""
    try:
        return METHODS[name]
    except KeyError:
        raise FgOnnxError(f"unknown method {name!r}; choose from "
                          f"{', '.join(METHOD_NAMES)}") from None
