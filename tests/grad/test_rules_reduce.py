"""Adjoint tests of the Reduce* rules in both opset forms (axes attribute and axes input)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import assert_runs_on_onnxruntime, assert_vjp, assert_vjp_symbolic, randn

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import make_runner, single_node_model

RNG = np.random.default_rng(2024)
OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
       "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


def x_for(op: str, *shape: int) -> np.ndarray:
    x = randn(RNG, *shape, away_from=0.0)
    return np.abs(x) + 0.1 if op == "ReduceLogSum" else x


def reduce_inputs(op: str, opset: int, x: np.ndarray, axes: list[int] | None,
                  **attrs: Any) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Inputs and attributes in the form the opset wants (ReduceSum takes axes as an input
    from opset 13, the others from 18)."""
    inputs: list[tuple[str, Any]] = [("x", x)]
    if axes is not None:
        if opset >= 18 or op == "ReduceSum":
            inputs.append(("w:axes", np.array(axes, dtype=np.int64)))
        else:
            attrs["axes"] = axes
    return inputs, attrs


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize(
    ("axes", "keepdims"), [([1], 1), ([-1, 0], 0), (None, 0), (None, 1)],
)
def test_reduce(op: str, opset: int, axes: list[int] | None, keepdims: int) -> None:
    inputs, attrs = reduce_inputs(op, opset, x_for(op, 2, 3, 4), axes, keepdims=keepdims)
    assert_vjp(op, inputs, opset=opset, **attrs)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
def test_reduce_noop_with_empty_axes(op: str) -> None:
    assert_vjp(op, [("x", x_for(op, 2, 3))], opset=18, noop_with_empty_axes=1)
    assert_vjp(op, [("x", x_for(op, 2, 3)), ("w:axes", np.zeros(0, np.int64))], opset=18,
               keepdims=0)


def test_reduce_nonlinear_noop_is_refused() -> None:
    model, _ = single_node_model("ReduceL2", [("x", x_for("ReduceL2", 2, 3))], opset=18,
                                 noop_with_empty_axes=1)
    with pytest.raises(GraphBuildError, match="noop_with_empty_axes"):
        gradient_model(model)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_min_ties_share(op: str) -> None:
    # Ties are kinks, so no finite-difference test: check the documented equal split.
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=np.float32)
    x = x if op == "ReduceMax" else -x
    model, feeds = single_node_model(op, [("x", x)], axes=[1], keepdims=0)
    grad = gradient_model(model)
    seed = np.array([6.0, 3.0], dtype=np.float32)
    got = make_runner(grad)({**feeds, "grad_seed": seed})[1]
    np.testing.assert_allclose(got, [[0.0, 3.0, 3.0], [1.0, 1.0, 1.0]])


def test_reduce_dynamic_axes_and_symbolic_dims() -> None:
    # Axes computed at run time and symbolic dims: the count and unsqueeze go dynamic.
    axes = np.array([-1], dtype=np.int64)
    assert_vjp("ReduceMean", [("x", x_for("ReduceMean", 2, 3, 4)), ("axes", axes)],
               keepdims=0, opset=18)
    assert_vjp("ReduceMax", [("x", x_for("ReduceMax", 2, 3, 4)), ("axes", axes)],
               keepdims=0, opset=18)
    for op in ["ReduceMean", "ReduceL2", "ReduceLogSumExp"]:
        assert_vjp_symbolic(op, [("x", x_for(op, 3, 4))], {"x": ["N", 4]}, axes=[0],
                            keepdims=0)
    assert_runs_on_onnxruntime("ReduceMax", [("x", x_for("ReduceMax", 2, 3, 4))], axes=[1],
                               keepdims=0)


def test_reduce_l2_of_zeros_is_finite() -> None:
    model, feeds = single_node_model("ReduceL2", [("x", np.zeros((2, 3), np.float32))],
                                     axes=[1], keepdims=1)
    got = make_runner(gradient_model(model))({**feeds, "grad_seed": np.ones((2, 1), np.float32)})
    np.testing.assert_array_equal(got[1], np.zeros((2, 3)))


@pytest.mark.parametrize("size", [(4, 5), (7, 3)])
def test_reductions_over_run_time_spatial_sizes(size: tuple[int, int]) -> None:
    # A spatial mean or max of an image of open size (a segmentation head's pooling).
    dims: dict[str, list[int | str]] = {"x": ["N", 3, "H", "W"]}
    for op, keepdims in [("ReduceMean", 1), ("ReduceSum", 0), ("ReduceMax", 1)]:
        inputs, attrs = reduce_inputs(op, 17, x_for(op, 2, 3, *size), [2, 3],
                                      keepdims=keepdims)
        assert_vjp_symbolic(op, inputs, dims, **attrs)
