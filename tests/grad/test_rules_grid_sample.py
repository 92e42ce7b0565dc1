"""Adjoint tests of GridSample's rule against onnxruntime's own float32 forward (image) and
finite differences (grid), for each mode, padding mode and align_corners."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp, assert_vjp_symbolic

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(20)
PADDINGS = ["zeros", "border", "reflection"]


def grid(n: int, h: int, w: int, spread: float = 1.3) -> np.ndarray:
    """Grid points reaching past the image on every side (spread > 1); uniform samples miss
    the kinks of bilinear weights and nearest's rounding ties."""
    return RNG.uniform(-spread, spread, size=(n, h, w, 2)).astype(np.float32)


def image(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize(("mode", "opset"), [("bilinear", 16), ("nearest", 16),
                                             ("linear", 20)])
def test_image_gradient_matches_onnxruntime(mode: str, opset: int, padding: str,
                                            align: int) -> None:
    assert_linear_vjp_on_onnxruntime(
        "GridSample", [("x", image(2, 3, 5, 6)), ("w:grid", grid(2, 4, 7, spread=2.6))],
        opset=opset, mode=mode, padding_mode=padding, align_corners=align)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [0, 1])
def test_bilinear_gradient_of_image_and_grid(padding: str, align: int) -> None:
    assert_vjp("GridSample", [("x", image(2, 2, 4, 5)), ("g", grid(2, 3, 3, spread=1.8))],
               opset=20, mode="linear", padding_mode=padding, align_corners=align)


def test_nearest_grid_gets_no_gradient() -> None:
    assert_vjp("GridSample", [("x", image(1, 2, 4, 5)), ("g", grid(1, 3, 3))], opset=20,
               mode="nearest")


def test_bicubic_is_refused_in_one_line() -> None:
    model, _ = single_node_model("GridSample", [("x", image(1, 1, 4, 4)),
                                                ("w:g", grid(1, 2, 2))], opset=16,
                                 mode="bicubic")
    with pytest.raises(GraphBuildError, match="bilinear or nearest"):
        gradient_model(model)


def test_sizes_known_only_at_run_time() -> None:
    assert_vjp_symbolic("GridSample", [("x", image(2, 2, 4, 5)), ("g", grid(2, 3, 3))],
                        {"x": ["N", 2, "H", "W"], "g": ["N", "h", "w", 2]}, opset=20,
                        mode="linear", padding_mode="reflection")


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 4, 5], [2, 1, 3, 4, 2]])
def test_affine_grid(size: list[int], align: int) -> None:
    spatial = len(size) - 2
    theta = RNG.standard_normal((2, spatial, spatial + 1)).astype(np.float32)
    assert_vjp("AffineGrid", [("theta", theta), ("w:size", np.array(size, np.int64))],
               opset=20, align_corners=align)
