"""Adjoint tests of the arithmetic rules: Add, Sub, Mul (and x·σ(x)), Div, Sum, Neg."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_vjp, onnxruntime_gradients, randn
from onnx import TensorProto, helper

from fg_onnx.grad import GRAD_PREFIX, gradient_model
from fg_onnx.grad.check import check_vjp

RNG = np.random.default_rng(1234)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((4,), (2, 3, 4)), ((1, 3, 1), (2, 1, 5)),
     ((2, 3, 4), ())],
)
def test_binary_broadcast(op: str, a_shape: tuple, b_shape: tuple) -> None:
    b = r(*b_shape)
    if op == "Div":
        b = np.abs(b) + 0.5
    assert_vjp(op, [("a", r(*a_shape)), ("b", b)])


def test_binary_with_constant_operand() -> None:
    assert_vjp("Mul", [("a", r(2, 3, 4)), ("w:b", r(3, 1))])
    assert_vjp("Div", [("w:a", r(3, 1)), ("b", np.abs(r(2, 3, 4)) + 0.5)])


def test_sum_and_neg() -> None:
    assert_vjp("Sum", [("a", r(2, 3)), ("b", r(3)), ("c", r(1, 3))])
    assert_vjp("Neg", [("a", r(2, 3))])


def _silu_model(extra_use: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    if extra_use:  # the gate also feeds another node: its cotangent has two sources
        nodes += [helper.make_node("Mul", ["s", "s"], ["s2"]),
                  helper.make_node("Add", ["y", "s2"], ["z"])]
    out = "z" if extra_use else "y"
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "silu", [value("x", TensorProto.FLOAT, [2, 3, 4])],
                              [value(out, TensorProto.FLOAT, [2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("extra_use", [False, True])
def test_silu_gradient_skips_the_sigmoid_node(extra_use: bool) -> None:
    model = _silu_model(extra_use)
    result = check_vjp(model, {"x": r(2, 3, 4) * 3})
    assert result.adjoint_error < 1e-6 and result.float32_error < 1e-4
    ops = [n.op_type for n in gradient_model(model).graph.node[len(model.graph.node):]]
    assert ops.count("Sub") == (2 if extra_use else 1)  # σ(1 − σ) only for the extra use


def test_silu_gate_wanted_for_itself_keeps_its_whole_cotangent() -> None:
    model = _silu_model(False)
    x = r(2, 3, 4)
    seed = r(2, 3, 4)
    grads = onnxruntime_gradients(model, {"x": x}, seed, wrt=["x", "s"])
    dx, ds = grads[GRAD_PREFIX + "x"], grads[GRAD_PREFIX + "s"]
    sigma = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(ds, seed * x, rtol=1e-5)  # ∂y/∂s with x held
    np.testing.assert_allclose(dx, seed * (sigma + x * sigma * (1 - sigma)), rtol=1e-4, atol=1e-6)
