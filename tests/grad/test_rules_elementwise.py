"""Adjoint tests of the elementwise math rules and of the no-gradient declarations."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from helpers import (
    ADJOINT_TOL,
    FLOAT32_TOL,
    assert_runs_on_onnxruntime,
    assert_vjp,
    onnxruntime_gradients,
    randn,
)
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import check_vjp

RNG = np.random.default_rng(77)


def r(*shape: int, scale: float = 1.0, away_from: float | None = None) -> np.ndarray:
    return (randn(RNG, *shape, away_from=away_from) * np.float32(scale)).astype(np.float32)


def positive(*shape: int, low: float = 0.3, high: float = 2.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def between_integers(*shape: int) -> np.ndarray:
    """Values k + [0.1, 0.4]: away from every integer and half-integer (Floor, Round, ...)."""
    whole = RNG.integers(-3, 3, shape)
    return (whole + RNG.uniform(0.1, 0.4, shape)).astype(np.float32)


def graph_model(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray],
                initializers: dict[str, np.ndarray] | None = None,
                opset: int = 17) -> onnx.ModelProto:
    """A float32 model of several nodes with output ``y``."""
    graph = helper.make_graph(
        nodes, "multi",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def assert_model_vjp(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    result = check_vjp(model, feeds)
    assert result.adjoint_error < ADJOINT_TOL, (result.lhs, result.rhs)
    assert result.float32_error < FLOAT32_TOL, result.float32_error


@pytest.mark.parametrize(
    ("op", "x"),
    [
        ("Exp", r(2, 3, 4)),
        ("Log", positive(2, 3, 4)),
        ("Sqrt", positive(2, 3, 4)),
        ("Reciprocal", r(2, 3, 4, away_from=0.0) + np.float32(0.2) * np.sign(r(1))),
        ("Abs", r(2, 3, 4, away_from=0.0)),
        ("Sin", r(2, 3, 4, scale=3.0)),
        ("Cos", r(2, 3, 4, scale=3.0)),
        ("Tan", RNG.uniform(-1.2, 1.2, (3, 5)).astype(np.float32)),
        ("Sinh", r(3, 5)),
        ("Cosh", r(3, 5)),
        ("Atan", r(3, 5, scale=2.0)),
        ("Atanh", RNG.uniform(-0.9, 0.9, (3, 5)).astype(np.float32)),
        ("Asin", RNG.uniform(-0.9, 0.9, (3, 5)).astype(np.float32)),
        ("Acos", RNG.uniform(-0.9, 0.9, (3, 5)).astype(np.float32)),
        ("Asinh", r(3, 5, scale=2.0)),
        ("Acosh", positive(3, 5, low=1.1, high=3.0)),
        ("Identity", r(2, 3)),
    ],
)
def test_unary(op: str, x: np.ndarray) -> None:
    assert_vjp(op, [("x", x)])


@pytest.mark.parametrize(
    "inputs",
    [
        [("x", r(2, 3, 4)), ("w:p", f32(3.0))],
        [("x", r(2, 3, 4)), ("w:p", f32(2.0))],
        [("x", r(2, 3, 4)), ("w:p", f32(1.0))],
        [("x", positive(2, 3, 4)), ("w:p", f32(0.5))],
        [("x", positive(2, 3, 4)), ("w:p", f32([-1.5, 0.5, 2.0, 3.0]))],
        [("x", r(2, 3, 4)), ("w:p", np.array(3, dtype=np.int64))],
        [("x", r(2, 3, 4)), ("p", np.array(2, dtype=np.int64))],
        [("x", positive(3, 4)), ("p", r(2, 3, 4))],
        [("x", positive(4)), ("p", r(2, 3, 1))],
        [("w:x", positive(2, 1, 4)), ("p", r(3, 1))],
        [("x", positive(3, 4)), ("p", r(4).astype(np.float64))],
    ],
    ids=["cube", "square", "one", "sqrt", "tensor-exponent", "int-constant", "int-input",
         "both", "both-broadcast", "exponent-only", "double-exponent"],
)
def test_pow(inputs: list) -> None:
    assert_vjp("Pow", inputs)


def test_pow_exponent_gradient_is_zero_for_non_positive_base() -> None:
    x = f32([[-2.0, 0.0, 1.5]])
    p = f32([[2.0, 3.0, 2.0]])
    model = graph_model([helper.make_node("Pow", ["x", "p"], ["y"])], {"x": x, "p": p})
    grads = onnxruntime_gradients(model, {"x": x, "p": p}, np.ones((1, 3), np.float32))
    np.testing.assert_allclose(grads["grad_p"], [[0.0, 0.0, 1.5**2 * np.log(1.5)]], rtol=1e-5)
    np.testing.assert_allclose(grads["grad_x"], [[-4.0, 0.0, 3.0]], rtol=1e-5)


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize(
    "shapes",
    [[(2, 3, 4), (2, 3, 4)], [(2, 3, 4), (3, 1)], [(4,), (2, 3, 1), (3, 4)], [(2, 3)],
     [(1, 3, 1), (2, 1, 4), (2, 3, 4), ()]],
    ids=["same", "broadcast", "three", "single", "four"],
)
def test_max_min(op: str, shapes: list) -> None:
    assert_vjp(op, [(f"x{i}", r(*shape)) for i, shape in enumerate(shapes)])


def test_max_with_constant_is_relu_like() -> None:
    assert_vjp("Max", [("x", r(3, 5, away_from=0.0)), ("w:zero", f32(0.0))])


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("needed", [0, 1, 2])
def test_max_min_with_one_needed_input(op: str, needed: int) -> None:
    inputs = [(("" if i == needed else "w:") + f"x{i}", r(3, 4)) for i in range(3)]
    assert_vjp(op, inputs)


@pytest.mark.parametrize(("op", "order"), [("Max", [0, 1, 2]), ("Min", [2, 0, 1])])
def test_max_min_ties_go_to_the_first_input(op: str, order: list) -> None:
    x = f32([[1.0, 2.0, 3.0]])
    values = {"a": x, "b": x.copy(), "c": f32([[-5.0, 9.0, 0.0]])}
    names = [list(values)[i] for i in order]
    model = graph_model([helper.make_node(op, names, ["y"])], {k: values[k] for k in names})
    seed = f32([[1.0, 2.0, 3.0]])
    grads = onnxruntime_gradients(model, {k: values[k] for k in names}, seed)
    y = (np.maximum if op == "Max" else np.minimum).reduce([values[k] for k in names])
    claimed = np.zeros_like(seed, dtype=bool)
    for name in names:
        # The first input holding the extreme value takes the whole cotangent.
        mine = (values[name] == y) & ~claimed
        np.testing.assert_array_equal(grads[f"grad_{name}"], np.where(mine, seed, 0.0))
        claimed |= mine


def test_mean() -> None:
    assert_vjp("Mean", [("a", r(2, 3, 4)), ("b", r(3, 1)), ("w:c", r(4)), ("d", r(2, 3, 4))])


@pytest.mark.parametrize(
    ("cond_shape", "x_shape", "y_shape"),
    [((2, 3, 4), (2, 3, 4), (2, 3, 4)), ((3, 1), (2, 3, 4), ()), ((2, 3, 4), (4,), (3, 1))],
)
def test_where(cond_shape: tuple, x_shape: tuple, y_shape: tuple) -> None:
    condition = RNG.random(cond_shape) > 0.5
    assert_vjp("Where", [("c", condition), ("x", r(*x_shape)), ("y", r(*y_shape))])


def test_where_with_constant_branch() -> None:
    condition = RNG.random((2, 3)) > 0.5
    assert_vjp("Where", [("c", condition), ("w:x", r(2, 3)), ("y", r(2, 3))])


@pytest.mark.parametrize("fmod_divisor_sign", [1.0, -1.0])
def test_mod(fmod_divisor_sign: float) -> None:
    b = positive(3, 4, low=0.5, high=1.5) * np.float32(fmod_divisor_sign)
    ratio = RNG.integers(-4, 4, (3, 4)) + RNG.uniform(0.2, 0.8, (3, 4))
    a = (ratio * b).astype(np.float32)
    assert_vjp("Mod", [("a", a), ("b", b)], fmod=1)
    assert_vjp("Mod", [("a", a), ("b", b[:1])], fmod=1)


def test_cast_float_to_float() -> None:
    assert_vjp("Cast", [("x", r(2, 3))], to=TensorProto.FLOAT)


def test_cast_through_double_returns_to_float() -> None:
    x = r(2, 3)
    model = graph_model(
        [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
         helper.make_node("Mul", ["d", "d"], ["d2"]),
         helper.make_node("Cast", ["d2"], ["y"], to=TensorProto.FLOAT)],
        {"x": x},
    )
    assert_model_vjp(model, {"x": x})


def test_cast_like_through_double() -> None:
    x = r(2, 3)
    model = graph_model(
        [helper.make_node("CastLike", ["x", "like"], ["d"]),
         helper.make_node("Sin", ["d"], ["s"]),
         helper.make_node("CastLike", ["s", "x"], ["y"])],
        {"x": x}, {"like": np.zeros((), np.float64)},
    )
    assert_model_vjp(model, {"x": x})


def test_cast_to_integer_blocks_the_gradient() -> None:
    x = between_integers(3, 4)
    model = graph_model(
        [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
         helper.make_node("Cast", ["i"], ["t"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "t"], ["y"])],
        {"x": x},
    )
    assert_model_vjp(model, {"x": x})


@pytest.mark.parametrize("op", ["Sign", "Floor", "Ceil", "Round"])
def test_piecewise_constant_ops_have_no_gradient(op: str) -> None:
    x = between_integers(3, 4)
    model = graph_model(
        [helper.make_node(op, ["x"], ["k"]), helper.make_node("Mul", ["x", "k"], ["y"])],
        {"x": x},
    )
    assert_model_vjp(model, {"x": x})


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        ([("x", r(2, 3))], 1),
        ([("x", r(2, 3))], 2),
        ([("x", r(2, 3)), ("w:ratio", f32(0.3))], 2),
        ([("x", r(2, 3)), ("w:ratio", f32(0.3)), ("w:training", np.array(False))], 1),
    ],
    ids=["plain", "with-mask", "ratio", "training-false"],
)
def test_dropout(inputs: list, outputs: int) -> None:
    assert_vjp("Dropout", inputs, outputs=outputs)


@pytest.mark.parametrize("training", [np.array(True), None])
def test_dropout_in_training_mode_is_refused(training: np.ndarray | None) -> None:
    x = r(2, 3)
    feeds = {"x": x} if training is not None else {"x": x, "training": np.array(True)}
    initializers = {"training": training} if training is not None else None
    model = graph_model([helper.make_node("Dropout", ["x", "", "training"], ["y"])],
                        feeds, initializers)
    with pytest.raises(GraphBuildError, match="training_mode"):
        gradient_model(model, wrt=["x"])


@pytest.mark.parametrize(
    ("inputs", "attrs"),
    [
        ([("x", r(2, 4, 5))], {}),
        ([("x", r(4, 5)), ("w:k", np.array(1, dtype=np.int64))], {"upper": 0}),
        ([("x", r(3, 5, 4)), ("w:k", np.array(-1, dtype=np.int64))], {"upper": 1}),
    ],
)
def test_trilu(inputs: list, attrs: dict) -> None:
    assert_vjp("Trilu", inputs, **attrs)


@pytest.mark.parametrize(
    ("shape", "k", "attrs"),
    [((3, 6), 2, {}), ((5, 4), 3, {"axis": 0, "largest": 0}), ((2, 5, 3), 1, {"axis": 1})],
)
def test_topk(shape: tuple, k: int, attrs: dict) -> None:
    x = RNG.permutation(np.prod(shape)).reshape(shape).astype(np.float32) * np.float32(0.1)
    assert_vjp("TopK", [("x", x), ("w:k", np.array([k], dtype=np.int64))], outputs=2, **attrs)


@pytest.mark.parametrize(
    ("op", "inputs", "attrs"),
    [
        ("Pow", [("x", positive(2, 3)), ("p", r(3))], {}),
        ("Pow", [("x", r(2, 3)), ("p", np.array(3, dtype=np.int64))], {}),
        ("Pow", [("x", positive(2, 3)), ("p", r(3).astype(np.float64))], {}),
        ("Max", [("a", r(2, 3)), ("b", r(3)), ("c", r(2, 1))], {}),
        ("Min", [("a", r(2, 3)), ("b", r(3))], {}),
        ("Mean", [("a", r(2, 3)), ("b", r(3))], {}),
        ("Where", [("c", RNG.random((2, 3)) > 0.5), ("x", r(2, 3)), ("y", r(3))], {}),
        ("Mod", [("a", r(2, 3)), ("b", positive(2, 3))], {"fmod": 1}),
        ("Abs", [("x", r(2, 3, away_from=0.0))], {}),
        ("Reciprocal", [("x", positive(2, 3))], {}),
        ("Trilu", [("x", r(3, 3)), ("w:k", np.array(1, dtype=np.int64))], {}),
        ("Acosh", [("x", positive(2, 3, low=1.1))], {}),
    ],
)
def test_gradient_graph_runs_on_onnxruntime(op: str, inputs: list, attrs: dict) -> None:
    assert_runs_on_onnxruntime(op, inputs, **attrs)


def test_topk_gradient_graph_runs_on_onnxruntime() -> None:
    x = RNG.permutation(12).reshape(3, 4).astype(np.float32)
    assert_runs_on_onnxruntime("TopK", [("x", x), ("w:k", np.array([2], dtype=np.int64))],
                               outputs=2)
