"""Adjoint tests of ConvTranspose's input gradient (Conv itself is in test_rules_core), and of
both where the spatial sizes are known only at run time."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp, assert_vjp_symbolic, randn

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


def _symbolic_spatial(x: np.ndarray) -> dict[str, list[int | str]]:
    """x's batch and spatial dims made symbolic (the channel count stays known)."""
    return {"x": ["N", x.shape[1], *(f"S{i}" for i in range(x.ndim - 2))]}


def _grown(x: np.ndarray, by: int) -> np.ndarray:
    """A random input like ``x`` with every spatial dim ``by`` longer (another remainder
    modulo the stride)."""
    return r(*x.shape[:2], *(d + by for d in x.shape[2:]))


DYNAMIC_TRANSPOSE = [(i, a) for (i, a), name in zip(CASES, IDS, strict=True)
                     if not name.startswith("outshape")]


@pytest.mark.parametrize("grow", [0, 1])
@pytest.mark.parametrize(("inputs", "attrs"), DYNAMIC_TRANSPOSE,
                         ids=[n for n in IDS if not n.startswith("outshape")])
def test_conv_transpose_at_run_time_sizes(inputs: list, attrs: dict, grow: int) -> None:
    x = _grown(inputs[0][1], grow)
    assert_vjp_symbolic("ConvTranspose", [("x", x), *inputs[1:]], _symbolic_spatial(x), **attrs)


def test_conv_transpose_with_output_shape_needs_the_size() -> None:
    x = r(1, 2, 4, 4)
    with pytest.raises(GraphBuildError, match="output_shape fixes its output size"):
        assert_vjp_symbolic("ConvTranspose", [("x", x), ("w:W", r(2, 3, 3, 3))],
                            _symbolic_spatial(x), strides=[2, 2], output_shape=[8, 7],
                            auto_pad="SAME_UPPER")


CONV_CASES = [
    ([("x", r(2, 4, 7, 6)), ("w:W", r(6, 2, 3, 3)), ("w:B", r(6))],
     {"strides": [2, 2], "pads": [1, 0, 1, 1], "group": 2}),
    ([("x", r(2, 4, 7, 6)), ("w:W", r(6, 4, 1, 1))], {"strides": [2, 2]}),
    ([("x", r(1, 3, 9, 9)), ("w:W", r(5, 3, 3, 3))], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ([("x", r(1, 3, 9, 8)), ("w:W", r(5, 3, 2, 3))], {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ([("x", r(1, 3, 8, 7)), ("w:W", r(5, 3, 2, 3))], {"auto_pad": "SAME_LOWER"}),
    ([("x", r(1, 3, 11, 10)), ("w:W", r(5, 3, 3, 3))], {"dilations": [2, 2], "pads": [2, 1, 1, 2]}),
    ([("x", r(1, 4, 8, 8)), ("w:W", r(4, 1, 3, 3))], {"group": 4, "pads": [3, 1, 2, 3]}),
    ([("x", r(2, 3, 10)), ("w:W", r(4, 3, 3))], {"strides": [3], "auto_pad": "VALID"}),
    ([("x", r(1, 2, 5, 4, 4)), ("w:W", r(3, 2, 2, 2, 2))], {"strides": [2, 1, 2]}),
]


@pytest.mark.parametrize("grow", [0, 1])
@pytest.mark.parametrize(("inputs", "attrs"), CONV_CASES, ids=[
    "grouped", "1x1-stride2", "same-upper", "same-lower", "same-stride1", "dilated",
    "depthwise-wide-pads", "1d", "3d"])
def test_conv_at_run_time_sizes(inputs: list, attrs: dict, grow: int) -> None:
    x = _grown(inputs[0][1], grow)
    assert_vjp_symbolic("Conv", [("x", x), *inputs[1:]], _symbolic_spatial(x), **attrs)
