"""The saliency methods: which map the augmented model computes, and what runs around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.augment import GRAPH_METHODS
from fg_onnx.methods.integrated import integrated_gradients
from fg_onnx.methods.params import MethodParams
from fg_onnx.methods.smooth import smooth
from fg_onnx.runtime.session import Explanation, FullGrad

Runner = Callable[[FullGrad, np.ndarray, Explanation, MethodParams], Explanation]
"""(session, inputs, one-pass explanation with the targets fixed, params) -> explanation."""


@dataclass(frozen=True)
class Method:
    """One saliency method."""

    name: str
    graph: str
    """The map the augmented model computes in ``fg_saliency`` (AugmentOptions.method)."""
    runner: Runner | None
    """What combines several runs of it; None when one pass is the map."""
    summary: str


def _table() -> dict[str, Method]:
    runners: dict[str, Runner] = {"smooth": smooth, "integrated": integrated_gradients}
    rows = [
        Method("fullgrad", "fullgrad", None, "FullGrad: ψ(x·∇x) + Σ ψ(bias·∇bias)"),
        Method("simple-fullgrad", "simple-fullgrad", None,
               "FullGrad without the bias factor: ψ(x·∇x) + Σ ψ(∇ layer output)"),
        Method("smooth-fullgrad", "fullgrad", runners["smooth"],
               "FullGrad averaged over noisy copies"),
        Method("gradient", "gradient", None, "input gradient: Σ_c |∇x|"),
        Method("gradient-x-input", "gradient-x-input", None, "Σ_c |x·∇x|"),
        Method("smoothgrad", "gradient", runners["smooth"],
               "input gradient averaged over noisy copies"),
        Method("integrated-gradients", "gradient", runners["integrated"],
               "Σ_c |(x − 0)·mean ∇ along the path|"),
        Method("grad-cam", "grad-cam", None, "Grad-CAM at the last convolution"),
        Method("grad-cam++", "grad-cam++", None, "Grad-CAM++ at the last convolution"),
    ]
    assert {m.graph for m in rows} == set(GRAPH_METHODS)
    return {m.name: m for m in rows}


METHODS = _table()
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``; a one-line error listing the others when unknown."""
    try:
        return METHODS[name]
    except KeyError:
        raise FgOnnxError(f"unknown method {name!r}; choose from "
                          f"{', '.join(METHOD_NAMES)}") from None
