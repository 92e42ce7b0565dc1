"""Bias taps on hand-made graphs: what counts as a bias, what gets an implicit bias, which
axis a map term sums over (fg_onnx/fullgrad/taps.py, channels.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from helpers import completeness, run_on_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad
from fg_onnx.fullgrad.channels import channel_axes
from fg_onnx.fullgrad.contract import TARGET, read_facts
from fg_onnx.graph.info import GraphInfo

RNG = np.random.default_rng(0)
TOL = 1e-5


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray],
           x_shape: list[int], classes: int = 5, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "taps", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], classes])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _head(source: str, features: int, classes: int = 5) -> tuple[list[onnx.NodeProto],
                                                                 dict[str, np.ndarray]]:
    nodes = [helper.make_node("Flatten", [source], ["flat"]),
             helper.make_node("Gemm", ["flat", "w_head", "b_head"], ["y"], transB=1)]
    return nodes, {"w_head": _f32(classes, features, scale=0.1), "b_head": _f32(classes)}


def _run(model: onnx.ModelProto, x: np.ndarray, implicit: bool = False,
         ) -> tuple[dict[str, np.ndarray], dict, list[str]]:
    result = build_fullgrad(model, AugmentOptions(implicit_biases=implicit, components=True))
    outputs = run_on_onnxruntime(result.model, {"x": x, TARGET: np.full(len(x), -1, np.int64)})
    facts = dataclasses.asdict(read_facts(result.model))
    return outputs, facts, result.unexplained_nonlinear


def _completeness(outputs: dict[str, np.ndarray], x: np.ndarray) -> float:
    return float(completeness(outputs, x).max())


def test_computed_gemm_c_is_data_not_a_bias() -> None:
    # torch.addmm(linear(f), f, W): C carries a gradient; only linear's bias is a bias.
    x = _f32(2, 3, 2, 2)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["c"], transB=1),
             helper.make_node("Gemm", ["f", "w2", "c"], ["y"])]
    model = _model(nodes, {"w1": _f32(5, 12), "b1": _f32(5), "w2": _f32(12, 5)}, [2, 3, 2, 2])
    outputs, _, _ = _run(model, x)
    assert _completeness(outputs, x) < TOL
    used = outputs["fg_target_used"]
    bias = numpy_helper.to_array(model.graph.initializer[1])
    np.testing.assert_allclose(outputs["fg_bias_total"], bias[used], rtol=1e-5)


def _conv(out: str = "c", source: str = "x", channels: int = 3) -> tuple[onnx.NodeProto,
                                                                         dict[str, np.ndarray]]:
    node = helper.make_node("Conv", [source, "w_conv", "b_conv"], [out], pads=[1, 1, 1, 1])
    return node, {"w_conv": _f32(4, channels, 3, 3, scale=0.3), "b_conv": _f32(4)}


@pytest.mark.parametrize("op_type", ["LRN", "Floor", "Sign"])
def test_nonhomogeneous_ops_get_an_implicit_bias(op_type: str) -> None:
    # LRN divides by a power of a local sum of squares; Floor and Sign have a zero
    # derivative, so their whole output is a bias.
    conv, weights = _conv()
    attrs = {"size": 3, "alpha": 1.0, "bias": 1.0} if op_type == "LRN" else {}
    head, head_weights = _head("z", 4 * 6 * 6)
    nodes = [conv, helper.make_node(op_type, ["c"], ["n"], **attrs),
             helper.make_node("Add", ["n", "c"], ["z"]), *head]
    model = _model(nodes, {**weights, **head_weights}, [2, 3, 6, 6])
    x = _f32(2, 3, 6, 6, scale=2.0)
    outputs, _, noted = _run(model, x, implicit=True)
    assert _completeness(outputs, x) < TOL
    assert not noted
    outputs, _, noted = _run(model, x)
    assert _completeness(outputs, x) > 1e-3
    assert len(noted) == 1, "the approximation must be reported"


@pytest.mark.parametrize("op_type", ["LayerNormalization", "InstanceNormalization"])
def test_normalisation_without_implicit_biases_is_reported(op_type: str) -> None:
    conv, weights = _conv()
    axis = {"axis": 1} if op_type == "LayerNormalization" else {}
    scale_shape = (4, 6, 6) if op_type == "LayerNormalization" else (4,)
    head, head_weights = _head("n", 4 * 6 * 6)
    nodes = [conv, helper.make_node(op_type, ["c", "gamma", "beta"], ["n"], **axis), *head]
    weights = {**weights, **head_weights, "gamma": _f32(*scale_shape),
               "beta": _f32(*scale_shape)}
    x = _f32(2, 3, 6, 6)
    _, _, noted = _run(_model(nodes, weights, [2, 3, 6, 6]), x)
    assert noted == [op_type]  # an unnamed node is named by its op


def test_group_normalization_opset21_is_differentiated() -> None:
    # onnx's shape inference leaves its output untyped; everything after it was unknown.
    conv, weights = _conv()
    head, head_weights = _head("n", 4 * 6 * 6)
    nodes = [conv, helper.make_node("GroupNormalization", ["c", "gamma", "beta"], ["n"],
                                    num_groups=2), *head]
    weights = {**weights, **head_weights, "gamma": _f32(4), "beta": _f32(4)}
    x = _f32(2, 3, 6, 6)
    outputs, _, _ = _run(_model(nodes, weights, [2, 3, 6, 6], opset=21), x, implicit=True)
    assert _completeness(outputs, x) < TOL


def _psi(tensor: np.ndarray) -> np.ndarray:
    magnitude = np.abs(tensor.astype(np.float64))
    axes = tuple(range(1, magnitude.ndim))
    shifted = magnitude - magnitude.min(axis=axes, keepdims=True)
    return shifted / (shifted.max(axis=axes, keepdims=True) + 1e-6)


def _definition(outputs: dict[str, np.ndarray], x: np.ndarray, input_axis: int,
                tap_axis: int) -> np.ndarray:
    """The paper's map where every term is at the input's size: ψ of each term, summed
    over its channel axis."""
    total = _psi(outputs["fg_input_grad"] * x).sum(input_axis)
    for name, value in outputs.items():
        if name.startswith("fg_tap_"):
            total += _psi(value).sum(tap_axis)
    return total


@pytest.mark.parametrize("constant_shape", [(6, 1), (6,), (4, 1, 1)])
def test_map_sums_channels_whatever_axis_a_constant_varies_along(
        constant_shape: tuple[int, ...]) -> None:
    conv, weights = _conv()
    head, head_weights = _head("r", 4 * 6 * 6)
    nodes = [conv, helper.make_node("Add", ["c", "k"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), *head]
    weights = {**weights, **head_weights, "k": _f32(*constant_shape)}
    x = _f32(2, 3, 6, 6)
    outputs, _, _ = _run(_model(nodes, weights, [2, 3, 6, 6]), x)
    want = _definition(outputs, x, 1, 1)
    got = outputs["fg_saliency"]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_map_of_an_nhwc_region_sums_the_last_axis() -> None:
    # tf2onnx style: the Conv runs NCHW between Transposes, its activation stays NHWC.
    conv, weights = _conv(out="c", source="t")
    head, head_weights = _head("a", 6 * 6 * 4)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), conv,
             helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1]),
             helper.make_node("Sigmoid", ["ct"], ["s"]),
             helper.make_node("Mul", ["ct", "s"], ["a"]), *head]
    x = _f32(2, 6, 6, 3)
    outputs, facts, _ = _run(_model(nodes, {**weights, **head_weights}, [2, 6, 6, 3]), x,
                             implicit=True)
    assert _completeness(outputs, x) < TOL
    assert {c["op_type"]: c["map_axis"] for c in facts["components"]} == {"Conv": 1, "Mul": 3}
    conv_term = next(c["output"] for c in facts["components"] if c["op_type"] == "Conv")
    want = _psi(outputs["fg_input_grad"] * x).sum(3) + _psi(outputs[conv_term]).sum(1)
    for c in facts["components"]:
        if c["op_type"] == "Mul":
            want += _psi(outputs[c["output"]]).sum(3)
    got = outputs["fg_saliency"]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_channel_axes_follow_transposes_and_linear_layers_and_stop_at_reshapes() -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Transpose", ["r"], ["back"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["back", "shape"], ["flat"]),
             helper.make_node("Conv", ["t", "w_conv"], ["c"]),
             helper.make_node("MatMul", ["back", "w_linear"], ["linear"]),  # channels-last
             helper.make_node("Transpose", ["back"], ["back_t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["back", "back_t"], ["product"])]
    model = _model(nodes, {"shape": np.array([2, -1], np.int64), "w_conv": _f32(4, 3, 1, 1),
                           "w_linear": _f32(3, 5)}, [2, 6, 6, 3])
    model = onnx.shape_inference.infer_shapes(model)
    axes = channel_axes(GraphInfo(model), "x", 3)
    assert axes == {"x": 3, "t": 1, "r": 1, "back": 3, "c": 1, "linear": 3, "back_t": 2}
