"""If and Loop with static conditions inlined and unrolled: the same outputs on onnxruntime,
an exact gradient, completeness; data-dependent control flow on the path refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import randn
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import UnsupportedOpsError
from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import check_vjp
from fg_onnx.graph.control import MAX_UNROLLED_ITERATIONS
from fg_onnx.graph.normalize import normalize

RNG = np.random.default_rng(5)
FLOAT = TensorProto.FLOAT


def value(name: str, shape: list[int] | None = None, elem: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model_of(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[str], weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "control", inputs, [value(o) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def branch(nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, "branch", [], [value(output)])


def if_model(condition: onnx.NodeProto | None, flag_input: bool = False) -> onnx.ModelProto:
    """y = If(cond, then: Relu(h) * 3 + b, else: -h), h = x @ W; the branches read the outer
    h (the same name "t" inside both branches, as exporters write)."""
    then = branch([helper.make_node("Relu", ["h"], ["t"]),
                   helper.make_node("Mul", ["t", "three"], ["t3"]),
                   helper.make_node("Add", ["t3", "b"], ["out"])], "out")
    otherwise = branch([helper.make_node("Neg", ["h"], ["t"])], "t")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"])]
    nodes += [condition] if condition is not None else []
    nodes.append(helper.make_node("If", ["cond"], ["y"], then_branch=then,
                                  else_branch=otherwise))
    inputs = [value("x", [2, 4])] + ([value("cond", [], TensorProto.BOOL)] if flag_input else [])
    weights = {"W": randn(RNG, 4, 3), "three": np.array(3.0, np.float32),
               "b": randn(RNG, 3)}
    return model_of(nodes, inputs, ["y"], weights)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def assert_straight_line_and_exact(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    normalized = normalize(model)
    assert not [n for n in normalized.graph.node if n.op_type in ("If", "Loop")]
    for got, want in zip(run(normalized, feeds), run(model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # The float64 check runs the straight-line model (onnx's float64 copy leaves subgraph
    # types float32); its outputs are the original's, as compared above.
    for output in (v.name for v in model.graph.output):
        result = check_vjp(normalized, feeds, wrt=["x"], output=output)
        assert result.adjoint_error < 1e-6, (output, result.lhs, result.rhs)
        assert result.float32_error < 1e-4


@pytest.mark.parametrize("taken", [True, False])
def test_if_with_constant_condition_is_the_taken_branch(taken: bool) -> None:
    condition = helper.make_node("Constant", [], ["cond"],
                                 value=numpy_helper.from_array(np.array(taken)))
    feeds = {"x": randn(RNG, 2, 4)}
    model = if_model(condition)
    assert_straight_line_and_exact(model, feeds)
    want = run(model, feeds)[0]
    h = feeds["x"] @ numpy_helper.to_array(model.graph.initializer[0])
    assert not np.allclose(want, -h) if taken else np.allclose(want, -h, atol=1e-6)


def test_if_on_a_static_shape_folds_and_inlines() -> None:
    """TorchScript's ``if x.size(0) > 1``: Shape -> Gather -> Greater, decided by the shapes."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Greater", ["batch", "one"], ["cond"])]
    model = if_model(None)
    model.graph.node.insert(0, nodes[2])
    model.graph.node.insert(0, nodes[1])
    model.graph.node.insert(0, nodes[0])
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "zero"),
                                    numpy_helper.from_array(np.array(1, np.int64), "one")])
    assert_straight_line_and_exact(model, {"x": randn(RNG, 2, 4)})


def test_if_with_a_data_dependent_condition_is_refused_on_the_path() -> None:
    model = if_model(None, flag_input=True)  # x reaches y only inside the branches
    with pytest.raises(UnsupportedOpsError, match=r"If .*torch\.jit\.trace") as caught:
        gradient_model(model, wrt=["x"])
    assert "\n" not in str(caught.value)


def loop_model(trips: int) -> onnx.ModelProto:
    """v_{k+1} = tanh(v_k * W + x) + k, v_0 = x; outputs the last v and every v_{k+1}."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["v_in", "W"], ["vw"]),
         helper.make_node("Add", ["vw", "x"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["act"]),
         helper.make_node("Cast", ["k"], ["k_float"], to=FLOAT),
         helper.make_node("Add", ["act", "k_float"], ["v_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_out"], ["scan"])],
        "body",
        [value("k", [], TensorProto.INT64), value("cond_in", [], TensorProto.BOOL),
         value("v_in", [2, 3])],
        [value("cond_out", [], TensorProto.BOOL), value("v_out", [2, 3]), value("scan", [2, 3])],
    )
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["v_last", "v_all"], body=body)]
    weights = {"trips": np.array(trips, np.int64), "W": randn(RNG, 3)}
    return model_of(nodes, [value("x", [2, 3])], ["v_last", "v_all"], weights)


def test_loop_with_constant_trip_count_is_unrolled() -> None:
    assert_straight_line_and_exact(loop_model(3), {"x": randn(RNG, 2, 3)})


def test_long_loop_stays_and_is_refused_on_the_path() -> None:
    model = loop_model(MAX_UNROLLED_ITERATIONS + 1)
    assert [n.op_type for n in normalize(model).graph.node] == ["Loop"]
    with pytest.raises(UnsupportedOpsError, match="Loop"):
        gradient_model(model, wrt=["x"], output="v_last")


def test_augmented_cnn_with_inlined_if_is_complete() -> None:
    then = branch([helper.make_node("Relu", ["h"], ["t"]),
                   helper.make_node("Add", ["t", "c"], ["out"])], "out")
    otherwise = branch([helper.make_node("Neg", ["h"], ["t"])], "t")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["h"], kernel_shape=[3, 3]),
             helper.make_node("Constant", [], ["cond"],
                              value=numpy_helper.from_array(np.array(True))),
             helper.make_node("If", ["cond"], ["a"], then_branch=then, else_branch=otherwise),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "d"], ["y"], transB=1)]
    weights = {"W": randn(RNG, 4, 3, 3, 3), "B": randn(RNG, 4), "c": randn(RNG, 1, 4, 1, 1),
               "G": randn(RNG, 5, 4), "d": randn(RNG, 5)}
    model = model_of(nodes, [value("x", [2, 3, 8, 8])], ["y"], weights)
    augmented = build_fullgrad(model, AugmentOptions(implicit_biases=True)).model
    x = randn(RNG, 2, 3, 8, 8)
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    y, score, grad, bias_total = session.run(
        ["y", "fg_score", "fg_input_grad", "fg_bias_total"],
        {"x": x, "fg_target": np.array([-1, 2], np.int64)})
    np.testing.assert_allclose(y, run(model, {"x": x})[0], rtol=1e-6)
    np.testing.assert_allclose((grad * x).sum(axis=(1, 2, 3)) + bias_total, score,
                               rtol=1e-4, atol=1e-5)
    assert np.abs(bias_total).min() > 1e-3  # the inlined branch's constant c is a tap
