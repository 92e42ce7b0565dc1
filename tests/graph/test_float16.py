"""The float16 conversion: which tensors change type, the Casts, and refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from float16_emulation import run_emulated
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.float16 import to_float16
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import infer_shapes
from fg_onnx.graph.save import check_model

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
HALF_TOL = 5e-3


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], outputs: list[str],
               constants: dict[str, Any] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs.items()],
        [onnx.ValueInfoProto(name=n) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def convert(model: onnx.ModelProto, float32: tuple[str, ...] = ()) -> tuple[onnx.ModelProto,
                                                                           GraphInfo]:
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    to_float16(converted, float32)
    check_model(converted, full_check=True)
    inferred = onnx.ModelProto()
    inferred.CopyFrom(converted)
    return converted, GraphInfo(infer_shapes(inferred))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def producer_type(info: GraphInfo, op_type: str) -> int:
    (node,) = [n for n in info.graph.node if n.op_type == op_type]
    return info.elem_type(node.output[0])


def graph_output_source(model: onnx.ModelProto, output: str) -> str:
    """The float16 tensor the final Cast turns into graph output ``output``."""
    (cast,) = [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] == output]
    return str(cast.input[0])


def conv_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "shift"], ["y"])]
    return make_model(nodes, {"x": [2, 3, 8, 8]}, ["y"], {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "shift": np.float32(0.25)})


def test_the_data_path_becomes_float16_and_the_interface_stays_float32() -> None:
    model = conv_relu()
    converted, info = convert(model)
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [FLOAT]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [FLOAT]
    assert {t.name: t.data_type for t in converted.graph.initializer} == {
        "w": HALF, "b": HALF, "shift": HALF}
    assert producer_type(info, "Conv") == producer_type(info, "Relu") == HALF
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (want,), (got,) = run(model, {"x": x}), run(converted, {"x": x})
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < HALF_TOL * np.abs(want).max()


def test_types_recorded_for_initializers_follow_them() -> None:
    """torch.onnx's dynamo exporter records value_info for weights; IR < 4 lists them as
    graph inputs."""
    model = conv_relu()
    model.graph.value_info.append(helper.make_tensor_value_info("w", FLOAT, [4, 3, 3, 3]))
    model.graph.input.append(helper.make_tensor_value_info("b", FLOAT, [4]))
    converted, _ = convert(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*converted.graph.value_info, *converted.graph.input]}
    assert (types["w"], types["b"], types["x"]) == (HALF, HALF, FLOAT)


def test_shape_arithmetic_in_float_stays_float32() -> None:
    """256 · 1000 overflows float16: the Reshape would get a wrong shape if it were converted."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["dims"], to=FLOAT),
        helper.make_node("ReduceProd", ["dims"], ["size"], keepdims=1),
        helper.make_node("Mul", ["size", "thousand"], ["big"]),
        helper.make_node("Div", ["big", "thousand"], ["back"]),
        helper.make_node("Cast", ["back"], ["length"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "length"], ["flat"]),
        helper.make_node("Mul", ["flat", "thousand"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 1, 16, 16]}, ["y"], {"thousand": np.float32(1000)})
    converted, info = convert(model)
    assert info.elem_type("big") == FLOAT
    assert info.elem_type("flat") == HALF
    x = np.random.default_rng(2).standard_normal((1, 1, 16, 16)).astype(np.float32)
    (got,) = run(converted, {"x": x})
    np.testing.assert_allclose(got, x.reshape(-1) * 1000, rtol=HALF_TOL)


def test_a_constant_shared_by_float16_and_float32_computations_is_duplicated() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["dims"], to=FLOAT),
        helper.make_node("Mul", ["dims", "two"], ["twice"]),
        helper.make_node("Cast", ["twice"], ["sizes"], to=TensorProto.INT64),
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("Resize", ["doubled", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    model = make_model(nodes, {"x": [1, 1, 2, 2]}, ["y"], {"two": np.float32(2)})
    converted, info = convert(model)
    types = sorted(t.data_type for t in converted.graph.initializer
                   if numpy_helper.to_array(t).tolist() == 2.0)
    assert types == [FLOAT, HALF]
    assert info.elem_type("twice") == FLOAT and info.elem_type("doubled") == HALF
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    (got,) = run(converted, {"x": x})
    np.testing.assert_array_equal(got, np.kron(x * 2, np.ones((2, 2, 2, 2), np.float32)))


def test_a_computed_constant_shared_with_the_float32_set_is_cast_there() -> None:
    """Exporters pass parameters through Identity nodes; a float32 sum that reads one must
    not pull the network into float32 (it did: EfficientNet-B0 stayed float32 throughout)."""
    nodes = [helper.make_node("Identity", ["b0"], ["b"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Add", ["r", "b"], ["y"]),
             helper.make_node("Cast", ["r"], ["wide"], to=FLOAT),
             helper.make_node("Mul", ["wide", "b"], ["z"])]
    model = make_model(nodes, {"x": [3]}, ["y", "z"], {"b0": np.array([1, 2, 3], np.float32)})
    converted, info = convert(model, float32=("wide",))
    assert info.elem_type("r") == info.elem_type("b") == HALF
    mul = next(n for n in converted.graph.node if n.op_type == "Mul")
    assert info.elem_type(mul.input[1]) == info.elem_type(mul.output[0]) == FLOAT
    x = np.array([-1, 0.5, 2], np.float32)
    y, z = run(converted, {"x": x})
    bias = np.array([1, 2, 3], np.float32)
    np.testing.assert_allclose(y, np.maximum(x, 0) + bias)
    np.testing.assert_allclose(z, np.maximum(x, 0) * bias)


def test_a_shape_value_that_data_also_uses_stays_float32_for_the_shape_arithmetic() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["dims"], to=FLOAT),
             helper.make_node("Div", ["x", "dims"], ["y"]),
             helper.make_node("Mul", ["dims", "thousand"], ["big"]),
             helper.make_node("Div", ["big", "thousand"], ["back"]),
             helper.make_node("Cast", ["back"], ["length"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["y", "length"], ["z"])]
    model = make_model(nodes, {"x": [100]}, ["z"], {"thousand": np.float32(1000)})
    converted, info = convert(model)
    assert info.elem_type("dims") == info.elem_type("big") == FLOAT
    assert info.elem_type("y") == HALF
    x = np.arange(100, dtype=np.float32)
    np.testing.assert_allclose(run(converted, {"x": x})[0], x / 100, rtol=1e-3)


def test_a_weight_expanded_to_a_shape_is_a_weight_not_shape_arithmetic() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Expand", ["w", "shape"], ["wide_w"]),
             helper.make_node("Mul", ["x", "wide_w"], ["y"])]
    model = make_model(nodes, {"x": [2, 3]}, ["y"], {"w": np.array([1, 2, 3], np.float32)})
    converted, info = convert(model)
    assert info.elem_type("wide_w") == HALF
    assert [n.op_type for n in converted.graph.node].count("Cast") == 2  # in and out


def test_slots_without_float16_get_casts() -> None:
    """Resize's scales are float32 only; Range has no float16 kernel type at all."""
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("ReduceMax", ["x"], ["start"], keepdims=0),
        helper.make_node("Add", ["start", "three"], ["stop"]),
        helper.make_node("Range", ["start", "stop", "one"], ["ramp"]),
        helper.make_node("ReduceSum", ["up"], ["total"], keepdims=0),
        helper.make_node("Add", ["ramp", "total"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 1, 2, 2]}, ["y"], {
        "scales": np.array([1, 1, 2, 2], np.float32), "three": np.float32(3),
        "one": np.float32(1)})
    converted, info = convert(model)
    assert {t.name: t.data_type for t in converted.graph.initializer}["scales"] == FLOAT
    assert info.elem_type("ramp") == HALF and info.elem_type("up") == HALF
    ranges = [n for n in converted.graph.node if n.op_type == "Range"]
    assert all(info.elem_type(name) == FLOAT for name in [*ranges[0].input, *ranges[0].output])
    x = np.array([[[[0.5, 1.0], [1.5, 2.0]]]], np.float32)
    (want,), (got,) = run(model, {"x": x}), run(converted, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_the_float32_set_keeps_its_class_and_only_that() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Cast", ["r"], ["wide"], to=FLOAT),
             helper.make_node("Mul", ["wide", "scale"], ["y"]),
             helper.make_node("Mul", ["r", "scale"], ["z"])]
    model = make_model(nodes, {"x": [4]}, ["y", "z"], {"scale": np.float32(3e4)})
    converted, info = convert(model, float32=("wide",))
    assert info.elem_type("r") == HALF
    assert info.elem_type(graph_output_source(converted, "z")) == HALF
    mul_y = next(n for n in converted.graph.node if n.op_type == "Mul" and "wide" in n.input)
    assert info.elem_type(mul_y.output[0]) == FLOAT
    x = np.array([1, 3, 4, 0.5], np.float32)
    y, z = run_emulated(converted, {"x": x}).values()
    np.testing.assert_allclose(y, x * 3e4, rtol=1e-3)  # 9e4 exceeds float16: kept float32
    assert np.isinf(z[1:3]).all()


def test_scatter_add_computes_in_float32() -> None:
    """onnxruntime's CPU provider has no float16 scatter-add kernel."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("ScatterElements", ["zeros", "index", "x"], ["y"], axis=0,
                              reduction="add")]
    model = make_model(nodes, {"x": [4]}, ["y"], {"shape": np.array([3]),
                                                 "index": np.array([0, 2, 0, 1])})
    converted, info = convert(model)
    assert producer_type(info, "ScatterElements") == FLOAT
    (got,) = run(converted, {"x": np.array([1, 2, 3, 4], np.float32)})
    np.testing.assert_array_equal(got, [4, 4, 2])


def test_constant_nodes_convert_their_values() -> None:
    nodes = [helper.make_node("Constant", [], ["c"], value_float=0.5),
             helper.make_node("Constant", [], ["v"], value_floats=[1.0, 2.0]),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
             helper.make_node("Add", ["x", "zeros"], ["a"]),
             helper.make_node("Mul", ["a", "c"], ["m"]),
             helper.make_node("Add", ["m", "v"], ["y"])]
    model = make_model(nodes, {"x": [2]}, ["y"])
    converted, info = convert(model)
    assert info.elem_type("c") == info.elem_type("v") == info.elem_type("zeros") == HALF
    assert not any(n.op_type == "Cast" and n.input[0] == "zeros" for n in converted.graph.node)
    (got,) = run(converted, {"x": np.array([2, 4], np.float32)})
    np.testing.assert_array_equal(got, [2, 4])


def test_a_weight_beyond_float16_range_is_refused() -> None:
    model = conv_relu()
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(
        np.array([1e6, 0, 0, 0], np.float32), "b"))
    with pytest.raises(UnsupportedModelError, match=r"'b' holds values up to 1e\+06, beyond "
                                                    r"float16's range"):
        to_float16(model)


def test_control_flow_is_refused() -> None:
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", FLOAT, [1])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch,
                              name="choose")]
    model = make_model(nodes, {"x": [1]}, ["y"], {"zero": np.float32(0)})
    with pytest.raises(UnsupportedModelError, match=r"control flow.*If at node choose"):
        to_float16(model)


def test_the_emulation_rounds_every_float16_result() -> None:
    """(x + 1e-4) − x is 0 in float16 for x = 1, whose spacing is 2⁻¹⁰; onnxruntime's CPU
    provider gives 1e-4, as it computes both ops in float32 without rounding between."""
    nodes = [helper.make_node("Add", ["x", "tiny"], ["s"]),
             helper.make_node("Sub", ["s", "x"], ["y"])]
    model = make_model(nodes, {"x": [1]}, ["y"], {"tiny": np.float32(1e-4)})
    converted, _ = convert(model)
    x = np.ones(1, np.float32)
    assert run(converted, {"x": x})[0][0] == pytest.approx(1e-4, rel=1e-2)
    assert run_emulated(converted, {"x": x})["y"][0] == 0


def test_a_float_size_cast_back_to_an_integer_keeps_float32() -> None:
    """3001 is not a float16 number: the Reshape would ask for 3000 elements."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["dims"], to=FLOAT),
             helper.make_node("ReduceProd", ["dims"], ["size"], keepdims=1),
             helper.make_node("Cast", ["size"], ["length"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "length"], ["y"])]
    model = make_model(nodes, {"x": [1, 1, 1, 3001]}, ["y"])
    converted, info = convert(model)
    assert info.elem_type("size") == FLOAT
    x = np.arange(3001, dtype=np.float32) / 3001
    np.testing.assert_allclose(run(converted, {"x": x.reshape(1, 1, 1, -1)})[0], x, atol=1e-3)


def test_a_constant_node_in_shape_arithmetic_keeps_float32() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["dims"], to=FLOAT),
             helper.make_node("Constant", [], ["factor"], value_float=0.3),
             helper.make_node("Mul", ["dims", "factor"], ["scaled"]),
             helper.make_node("Add", ["x", "scaled"], ["y"])]
    model = make_model(nodes, {"x": [1000]}, ["y"])
    converted, info = convert(model)
    assert info.elem_type("factor") == info.elem_type("scaled") == FLOAT
    assert info.elem_type(graph_output_source(converted, "y")) == HALF
    got = run_emulated(converted, {"x": np.zeros(1000, np.float32)})["y"]
    np.testing.assert_array_equal(got, np.float16(300.0))


def test_data_that_only_reaches_float32_slots_is_not_rounded() -> None:
    """Resize's scales as an input: 1.3334 is 1.333 in float16, which gives 3 pixels, not 4."""
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")]
    model = make_model(nodes, {"x": [1, 1, 3, 3], "scales": [4]}, ["y"])
    converted, info = convert(model)
    assert info.elem_type("scales") == FLOAT
    scales = np.array([1, 1, 1.3334, 1.3334], np.float32)
    got = run(converted, {"x": np.ones((1, 1, 3, 3), np.float32), "scales": scales})[0]
    assert got.shape == (1, 1, 4, 4)


def test_an_initializer_only_cast_to_integers_keeps_float32() -> None:
    nodes = [helper.make_node("Cast", ["big"], ["ints"], to=TensorProto.INT64),
             helper.make_node("Cast", ["ints"], ["back"], to=FLOAT),
             helper.make_node("Add", ["x", "back"], ["y"])]
    model = make_model(nodes, {"x": [1]}, ["y"], {"big": np.array([3001.0], np.float32)})
    converted, _ = convert(model)
    assert {t.name: t.data_type for t in converted.graph.initializer}["big"] == FLOAT
    got = run_emulated(converted, {"x": np.zeros(1, np.float32)})["y"]
    assert got[0] == np.float16(3001.0)  # rounded once, at the float16 Add


@pytest.mark.parametrize("op", ["RandomNormal", "EyeLike"])
def test_ops_without_float16_cpu_kernels_stay_float32(op: str) -> None:
    inputs = ["x"] if op == "EyeLike" else []
    attrs: dict[str, Any] = {"shape": [3, 3]} if op == "RandomNormal" else {}
    nodes = [helper.make_node(op, inputs, ["made"], dtype=FLOAT, **attrs),
             helper.make_node("Add", ["x", "made"], ["y"])]
    model = make_model(nodes, {"x": [3, 3]}, ["y"])
    converted, info = convert(model)
    made = next(n for n in converted.graph.node if n.op_type == op).output[0]
    assert info.elem_type(made) == FLOAT
    assert run(converted, {"x": np.zeros((3, 3), np.float32)})[0].shape == (3, 3)


def test_a_constant_beyond_float16_range_is_refused() -> None:
    nodes = [helper.make_node("Constant", [], ["c"], value_float=1e5),
             helper.make_node("Add", ["x", "c"], ["y"])]
    with pytest.raises(UnsupportedModelError, match="'c' holds values up to 1e\\+05"):
        to_float16(make_model(nodes, {"x": [1]}, ["y"]))


def test_outputs_of_unknown_type_are_refused() -> None:
    """A runtime's contrib op: onnx infers no type for its later outputs."""
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "x", "gamma", "beta"],
                              ["out", "", "", "sum"], domain="com.microsoft", name="skip"),
             helper.make_node("Add", ["sum", "out"], ["y"])]
    model = make_model(nodes, {"x": [2, 4]}, ["y"], {"gamma": np.ones(4, np.float32),
                                                     "beta": np.zeros(4, np.float32)})
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedModelError, match="element type of 'sum' "
                                                    r"\(SkipLayerNormalization at node skip\) "
                                                    "is unknown"):
        to_float16(model)
