"""Adjoint tests of ConvTranspose's input gradient (Conv itself is in test_rules_core)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp, randn

from fg_onnx.errors import GraphBuildError

RNG = np.random.default_rng(4321)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


CASES = [
    ([("x", r(2, 4, 5, 4)), ("w:W", r(4, 3, 3, 3)), ("w:B", r(3))], {"strides": [2, 2]}),
    ([("x", r(1, 4, 5, 4)), ("w:W", r(4, 3, 3, 2))],
     {"strides": [2, 3], "pads": [1, 0, 2, 1], "output_padding": [1, 2], "group": 2}),
    ([("x", r(1, 3, 4, 5)), ("w:W", r(3, 2, 3, 3))],
     {"strides": [2, 2], "dilations": [2, 1], "pads": [1, 1, 0, 2]}),
    ([("x", r(1, 3, 4, 5)), ("w:W", r(3, 2, 3, 3))], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ([("x", r(1, 3, 4, 5)), ("w:W", r(3, 2, 3, 3))], {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ([("x", r(1, 2, 4, 4)), ("w:W", r(2, 3, 3, 3))],
     {"strides": [2, 2], "output_shape": [8, 7], "auto_pad": "SAME_UPPER"}),
    ([("x", r(1, 2, 4, 4)), ("w:W", r(2, 3, 3, 3))],
     {"strides": [2, 2], "output_shape": [10, 9], "auto_pad": "SAME_LOWER"}),
    ([("x", r(1, 4, 6)), ("w:W", r(4, 1, 4))], {"strides": [3], "group": 4, "auto_pad": "VALID"}),
    ([("x", r(1, 2, 3, 3, 2)), ("w:W", r(2, 2, 2, 3, 2))],
     {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 1, 0]}),
]
IDS = ["stride2-bias", "grouped-outpad", "dilated", "same-upper", "same-lower",
       "outshape-upper", "outshape-larger", "depthwise-1d", "3d"]


@pytest.mark.parametrize(("inputs", "attrs"), CASES, ids=IDS)
def test_conv_transpose(inputs: list, attrs: dict) -> None:
    assert_vjp("ConvTranspose", inputs, **attrs)


@pytest.mark.parametrize(("inputs", "attrs"), CASES, ids=IDS)
def test_conv_transpose_matches_onnxruntime_forward(inputs: list, attrs: dict) -> None:
    assert_linear_vjp_on_onnxruntime("ConvTranspose", inputs, **attrs)


def test_conv_transpose_rejects_weight_gradients() -> None:
    with pytest.raises(GraphBuildError, match="weights"):
        assert_vjp("ConvTranspose", [("x", r(1, 2, 3, 3)), ("w", r(2, 2, 3, 3))])
