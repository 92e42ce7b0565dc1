"""Adjoint tests of Conv's and ConvTranspose's input gradients, also where the spatial sizes
are known only at run time."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp, assert_vjp_symbolic, randn

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(4321)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


@pytest.mark.parametrize(
    ("inputs", "attrs"),
    [
        ([("x", r(2, 4, 7, 6)), ("w:W", r(6, 2, 3, 3)), ("w:B", r(6))],
         {"strides": [2, 2], "pads": [1, 0, 1, 1], "group": 2}),
        ([("x", r(2, 4, 7, 6)), ("w:W", r(6, 4, 1, 1))], {"strides": [2, 2]}),
        ([("x", r(1, 3, 9, 9)), ("w:W", r(5, 3, 3, 3))],
         {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ([("x", r(1, 3, 9, 8)), ("w:W", r(5, 3, 2, 3))],
         {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
        ([("x", r(1, 3, 11, 10)), ("w:W", r(5, 3, 3, 3))],
         {"dilations": [2, 2], "pads": [2, 1, 1, 2]}),
        ([("x", r(1, 4, 8, 8)), ("w:W", r(4, 1, 3, 3))],
         {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
        ([("x", r(2, 3, 10)), ("w:W", r(4, 3, 3))], {"strides": [3], "auto_pad": "VALID"}),
        ([("x", r(1, 2, 5, 4, 4)), ("w:W", r(3, 2, 2, 2, 2))], {"strides": [2, 1, 2]}),
    ],
    ids=["grouped", "1x1-stride2", "same-upper", "same-lower", "dilated", "depthwise", "1d",
         "3d"],
)
def test_conv(inputs: list, attrs: dict) -> None:
    assert_vjp("Conv", inputs, **attrs)


# Stride 1: the gradient is a Conv whose weights are the original ones regrouped and flipped
# by nodes (one case per branch of that regrouping).
@pytest.mark.parametrize(
    ("inputs", "attrs"),
    [
        ([("x", r(2, 4, 6, 5)), ("w:W", r(6, 2, 3, 3))], {"group": 2, "pads": [1, 0, 2, 1]}),
        ([("x", r(1, 4, 6, 6)), ("w:W", r(4, 1, 3, 3))], {"group": 4, "pads": [1, 1, 1, 1]}),
        ([("x", r(1, 4, 6, 6)), ("w:W", r(8, 1, 3, 2))], {"group": 4, "pads": [1, 0, 1, 1]}),
        ([("x", r(1, 6, 5, 5)), ("w:W", r(2, 3, 2, 3))], {"group": 2}),
        ([("x", r(2, 5, 4, 4)), ("w:W", r(3, 5, 1, 1)), ("w:B", r(3))], {}),
        ([("x", r(1, 2, 4, 4, 3)), ("w:W", r(3, 2, 2, 3, 2))], {"pads": [1, 1, 0, 0, 1, 1]}),
    ],
    ids=["grouped", "depthwise", "multiplier", "one-output-per-group", "1x1", "3d"],
)
def test_conv_stride_one(inputs: list, attrs: dict) -> None:
    assert_vjp("Conv", inputs, **attrs)


def test_stride_one_gradient_stores_no_second_copy_of_the_weights() -> None:
    weights = r(64, 32, 3, 3)
    model, _ = single_node_model("Conv", [("x", r(1, 32, 8, 8)), ("w:W", weights)],
                                 pads=[1, 1, 1, 1])
    grad = gradient_model(model)
    assert {n.op_type for n in grad.graph.node} >= {"Conv", "Slice"}
    assert "ConvTranspose" not in {n.op_type for n in grad.graph.node}
    assert sum(t.ByteSize() for t in grad.graph.initializer) < weights.nbytes * 1.1



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
