"""Adjoint tests of the core rules: arithmetic, Relu, Conv, Gemm."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import assert_vjp, randn
from onnx import TensorProto, helper

from fg_onnx.grad import GRAD_PREFIX, SEED_INPUT, gradient_model
from fg_onnx.grad.check import check_vjp, single_node_model

RNG = np.random.default_rng(1234)


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


@pytest.mark.parametrize(
    ("inputs", "attrs"),
    [
        ([("a", r(3, 4)), ("b", r(5, 4)), ("w:c", r(5))],
         {"transB": 1, "alpha": 0.5, "beta": 2.0}),
        ([("a", r(4, 3)), ("b", r(4, 5)), ("c", r(1, 5))], {"transA": 1}),
        ([("a", r(4, 3)), ("b", r(5, 4))], {"transA": 1, "transB": 1}),
        ([("a", r(2, 3)), ("b", r(3, 4)), ("c", r(2, 4))], {"beta": 0.3}),
    ],
)
def test_gemm(inputs: list, attrs: dict) -> None:
    assert_vjp("Gemm", inputs, **attrs)


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


def test_relu() -> None:
    assert_vjp("Relu", [("a", randn(RNG, 3, 5, away_from=0.0))])


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
    grad = gradient_model(model, wrt=["x", "s"])
    session = ort.InferenceSession(grad.SerializeToString(), providers=["CPUExecutionProvider"])
    seed = r(2, 3, 4)
    dx, ds = session.run([GRAD_PREFIX + "x", GRAD_PREFIX + "s"], {"x": x, SEED_INPUT: seed})
    sigma = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(ds, seed * x, rtol=1e-5)  # ∂y/∂s with x held
    np.testing.assert_allclose(dx, seed * (sigma + x * sigma * (1 - sigma)), rtol=1e-4, atol=1e-6)
