"""Old Resize semantics kept through the opset upgrade; shape disagreements with onnxruntime
refused (fg_onnx/graph/legacy.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp
from onnx import helper

import fg_onnx
from fg_onnx.errors import UnsupportedModelError
from fg_onnx.grad import SEED_INPUT, gradient_model
from fg_onnx.grad.check import single_node_model
from fg_onnx.graph.normalize import normalize

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 2, 7, 7)).astype(np.float32)


def _scales(*spatial: float) -> np.ndarray:
    return np.array([1.0, 1.0, *spatial], np.float32)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize(("op_type", "opset", "scales"), [
    ("Upsample", 9, (2.0, 2.0)), ("Upsample", 9, (1.5, 2.5)), ("Upsample", 9, (1.0, 3.0)),
    ("Resize", 10, (2.0, 1.5)), ("Resize", 10, (0.6, 0.75)), ("Resize", 10, (0.5, 1.0)),
])
def test_old_resizes_compute_what_onnxruntime_computes(op_type: str, opset: int,
                                                       scales: tuple[float, ...],
                                                       mode: str) -> None:
    # onnx's converter alone gives half-pixel coordinates: up to 0.5 off for linear, and a
    # different nearest neighbour at 1.5. Shrinking, onnxruntime rounds nearest neighbours up.
    assert_linear_vjp_on_onnxruntime(op_type, [("x", X), ("w:s", _scales(*scales))],
                                     opset=opset, mode=mode)


def test_upsample_opset7_scales_attribute() -> None:
    assert_linear_vjp_on_onnxruntime("Upsample", [("x", X)], opset=7, mode="nearest",
                                     scales=[1.0, 1.0, 1.5, 2.0])


def test_nearest_resize_that_enlarges_and_shrinks_is_refused() -> None:
    model, _ = single_node_model("Resize", [("x", X), ("w:s", _scales(2.0, 0.5))], opset=10,
                                 mode="nearest")
    with pytest.raises(UnsupportedModelError, match="enlarges some axes and shrinks others"):
        normalize(model)


def test_nearest_resize_with_computed_scales_is_refused() -> None:
    model, _ = single_node_model("Resize", [("x", X), ("s", _scales(2.0, 2.0))], opset=10,
                                 mode="nearest")
    with pytest.raises(UnsupportedModelError, match="computed scales"):
        normalize(model)


def test_newer_resize_keeps_its_own_attributes() -> None:
    model, _ = single_node_model("Resize", [("x", X), ("", None), ("w:s", _scales(2.0, 2.0))],
                                 opset=13, mode="linear")
    resize = normalize(model).graph.node[0]
    assert not [a for a in resize.attribute if a.name == "coordinate_transformation_mode"]


def _pool(op_type: str, opset: int = 17, shape: tuple[int, ...] = (1, 1, 7, 6),
          **attrs: object) -> onnx.ModelProto:
    x = RNG.standard_normal(shape).astype(np.float32)
    return single_node_model(op_type, [("x", x)], opset=opset, **attrs)[0]


CEIL_PAST_THE_EDGE = {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 1, 1],
                      "ceil_mode": 1}


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_ceil_mode_window_in_the_end_padding_is_refused_before_opset22(op_type: str) -> None:
    # Width 6, pads 0/1, kernel 2, stride 3: ONNX infers 3 outputs, onnxruntime makes 2.
    with pytest.raises(UnsupportedModelError, match="axis 3 starts in the end padding"):
        gradient_model(_pool(op_type, **CEIL_PAST_THE_EDGE))


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_ceil_mode_is_differentiated_at_opset22(op_type: str) -> None:
    x = RNG.standard_normal((1, 1, 7, 6)).astype(np.float32)
    assert_vjp(op_type, [("x", x)], opset=22, **CEIL_PAST_THE_EDGE)


def test_ceil_mode_inside_the_input_is_accepted() -> None:
    gradient_model(_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                         shape=(1, 1, 8, 8)))


def test_same_pool_with_dilations_is_refused() -> None:
    model = _pool("MaxPool", opset=19, shape=(1, 2, 7, 5), kernel_shape=[2, 2],
                  strides=[2, 1], dilations=[2, 2], auto_pad="SAME_UPPER")
    with pytest.raises(UnsupportedModelError, match="SAME with dilations"):
        gradient_model(model)


def test_same_conv_transpose_with_output_padding_is_refused() -> None:
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    w = RNG.standard_normal((2, 2, 3, 3)).astype(np.float32)
    model, _ = single_node_model("ConvTranspose", [("x", x), ("w:w", w)], strides=[2, 2],
                                 output_padding=[1, 1], auto_pad="SAME_UPPER")
    with pytest.raises(UnsupportedModelError, match="ignores output_padding"):
        gradient_model(model)


def test_refusal_names_the_node() -> None:
    model = _pool("MaxPool", **CEIL_PAST_THE_EDGE)
    with pytest.raises(UnsupportedModelError, match="MaxPool node 'maxpool_node'"):
        gradient_model(model)
    assert helper.get_attribute_value(model.graph.node[0].attribute[0])  # input untouched


def test_ir3_model_zoo_file_with_initializers_as_inputs() -> None:
    # IR 3 wanted every initializer listed as a graph input; the augment pass adds some that
    # are not, which onnx.checker refused as an internal error.
    weights = {"w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "b": RNG.standard_normal(4).astype(np.float32),
               "fw": RNG.standard_normal((4, 5)).astype(np.float32),
               "fb": RNG.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["data_0", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"])]
    inputs = [helper.make_tensor_value_info("data_0", onnx.TensorProto.FLOAT, [1, 3, 8, 8])] + [
        helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape))
        for k, v in weights.items()]
    graph = helper.make_graph(
        nodes, "zoo", inputs, [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    augmented = fg_onnx.augment(model)
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    score, grad, bias = session.run(["fg_score", "fg_input_grad", "fg_bias_total"],
                                    {"data_0": x, "fg_target": np.array([-1])})
    assert abs(float((grad * x).sum() + bias[0] - score[0])) < 1e-4 * abs(float(score[0]))


def _forward_matches_after_the_upgrade(model: onnx.ModelProto, x: np.ndarray) -> None:
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    upgraded = gradient_model(model, wrt=["x"])
    got = ort.InferenceSession(upgraded.SerializeToString(), providers=["CPUExecutionProvider"]
                               ).run(["y"], {"x": x, SEED_INPUT: np.ones_like(want)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_upsample_inside_a_network_keeps_its_coordinates(mode: str) -> None:
    # The converter renames the output of an Upsample that is not a graph output.
    nodes = [helper.make_node("Upsample", ["x", "s"], ["up"], mode=mode),
             helper.make_node("Mul", ["up", "k"], ["y"])]
    graph = helper.make_graph(
        nodes, "up", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 7, 7])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 10, 17])],
        [onnx.numpy_helper.from_array(_scales(1.5, 2.5), "s"),
         onnx.numpy_helper.from_array(np.float32(2.0), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    _forward_matches_after_the_upgrade(model, X)


def test_nearest_resize10_with_scales_from_constant_nodes() -> None:
    # Constant + Concat: constant only once folded (TorchScript without constant folding).
    nodes = [helper.make_node("Constant", [], ["ones"], value=onnx.numpy_helper.from_array(
                 np.ones(2, np.float32))),
             helper.make_node("Constant", [], ["twos"], value=onnx.numpy_helper.from_array(
                 np.full(2, 2.0, np.float32))),
             helper.make_node("Concat", ["ones", "twos"], ["s"], axis=0),
             helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")]
    graph = helper.make_graph(
        nodes, "up", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 7, 7])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 14, 14])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7
    _forward_matches_after_the_upgrade(model, X)


SEVEN_OF_TWELVE = np.float32(7 / 12)  # 12 * it: 7.0 in float32, 6.99999976 in double


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_scales_sized_as_onnxruntime_sizes_them(mode: str) -> None:
    # TorchScript writes F.interpolate(size=7) on 12 pixels as this scale; shape inference
    # said 6 columns and the gradient failed to broadcast against onnxruntime's 7.
    x = RNG.standard_normal((1, 2, 16, 12)).astype(np.float32)
    scales = np.array([1, 1, 0.4375, SEVEN_OF_TWELVE], np.float32)
    assert_linear_vjp_on_onnxruntime("Resize", [("x", x), ("", None), ("w:s", scales)],
                                     opset=13, mode=mode)


def test_resize_scales_that_sizes_cannot_express_are_refused() -> None:
    # 6 * 1.8333333f is 11 in float32 and 10.99999995 in double, but 11 / 6 is another float.
    scales = np.array([1, 1, 1, np.nextafter(np.float32(11 / 6), np.float32(0))], np.float32)
    model, _ = single_node_model("Resize", [("x", X[:, :, :4, :6]), ("", None), ("w:s", scales)],
                                 opset=13, mode="nearest")
    with pytest.raises(UnsupportedModelError, match="give the Resize sizes instead of scales"):
        normalize(model)
