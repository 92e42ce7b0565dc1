"""Adjoint tests of Resize, each also checked against onnxruntime's own float32 forward."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from helpers import assert_linear_vjp_on_onnxruntime, assert_vjp, assert_vjp_symbolic, randn
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import SEED_INPUT, gradient_model

RNG = np.random.default_rng(97531)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def resize_inputs(shape: tuple[int, ...], scales: np.ndarray | None = None,
                  sizes: np.ndarray | None = None,
                  roi: np.ndarray | None = None) -> list[tuple[str, Any]]:
    return [
        ("x", randn(RNG, *shape)),
        ("w:roi", roi) if roi is not None else ("", None),
        ("w:scales", scales) if scales is not None else ("", None),
        ("w:sizes", sizes) if sizes is not None else ("", None),
    ]


def check(inputs: list[tuple[str, Any]], opset: int = 17, **attrs: Any) -> None:
    while inputs and not inputs[-1][0]:
        inputs = inputs[:-1]
    # Interpolation weights follow onnxruntime's float32 coordinates while the reference
    # evaluator (the float64 forward here) computes them in float64: weights agree to ~1e-7.
    tol = 1e-6 if attrs.get("mode") == "nearest" else 1e-5
    assert_vjp("Resize", inputs, opset=opset, adjoint_tol=tol, **attrs)
    assert_linear_vjp_on_onnxruntime("Resize", inputs, opset=opset, **attrs)


NEAREST = [
    ((1, 2, 3, 4), f32(1, 1, 2, 2), None, {}),
    ((1, 2, 3, 4), f32(1, 1, 2, 3), None,
     {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    ((1, 2, 8, 6), f32(1, 1, 0.5, 0.5), None, {}),
    ((1, 2, 8, 6), f32(1, 1, 0.5, 0.5), None, {"nearest_mode": "round_prefer_ceil"}),
    ((1, 2, 5, 7), None, i64(1, 2, 8, 3), {"nearest_mode": "ceil"}),
    ((1, 2, 5, 7), None, i64(1, 2, 9, 4), {"coordinate_transformation_mode": "align_corners",
                                           "nearest_mode": "round_prefer_ceil"}),
    ((2, 3, 4, 2), None, i64(2, 3, 7, 5),
     {"coordinate_transformation_mode": "pytorch_half_pixel"}),
    ((1, 4, 3, 2), f32(1, 2, 2, 1), None, {"coordinate_transformation_mode": "asymmetric",
                                           "nearest_mode": "floor"}),
]


@pytest.mark.parametrize(("shape", "scales", "sizes", "attrs"), NEAREST,
                         ids=["x2", "asym-floor", "half", "half-ceil", "sizes-ceil",
                              "align-corners", "pytorch-half", "nhwc"])
def test_resize_nearest(shape: tuple[int, ...], scales: Any, sizes: Any, attrs: dict) -> None:
    check(resize_inputs(shape, scales, sizes), mode="nearest", **attrs)


LINEAR = [
    ((1, 2, 3, 4), f32(1, 1, 2, 2), None, {}),
    ((1, 2, 3, 4), f32(1, 1, 2, 2), None, {"coordinate_transformation_mode": "align_corners"}),
    ((1, 2, 5, 7), None, i64(1, 2, 3, 11), {"coordinate_transformation_mode": "asymmetric"}),
    ((1, 2, 5, 7), None, i64(1, 2, 1, 4),
     {"coordinate_transformation_mode": "pytorch_half_pixel"}),
    ((1, 2, 9, 8), f32(1, 1, 0.6, 0.4), None, {}),
    ((2, 4, 3, 2), f32(1, 1.5, 2.5, 1), None, {}),
    ((1, 2, 3, 4), f32(1, 1, 2, 3), None, {"coordinate_transformation_mode": "align_corners"}),
    ((1, 2, 3, 4, 3), f32(1, 1, 2, 1.5, 2), None, {}),
]


@pytest.mark.parametrize(("shape", "scales", "sizes", "attrs"), LINEAR,
                         ids=["x2", "align-corners", "asym-sizes", "pytorch-one-row",
                              "downsample", "nhwc", "align-x2x3", "trilinear"])
def test_resize_linear(shape: tuple[int, ...], scales: Any, sizes: Any, attrs: dict) -> None:
    check(resize_inputs(shape, scales, sizes), mode="linear", **attrs)


CUBIC = [
    ((1, 2, 4, 5), f32(1, 1, 2, 2), {}),
    ((1, 2, 4, 5), f32(1, 1, 1.5, 2.5), {"exclude_outside": 1}),
    ((1, 2, 4, 5), f32(1, 1, 2, 2), {"coordinate_transformation_mode": "align_corners"}),
    ((1, 2, 9, 7), f32(1, 1, 0.5, 0.7), {"coordinate_transformation_mode": "asymmetric",
                                         "cubic_coeff_a": -0.5}),
]


@pytest.mark.parametrize(("shape", "scales", "attrs"), CUBIC,
                         ids=["x2", "exclude-outside", "align-corners", "asym-a05"])
def test_resize_cubic(shape: tuple[int, ...], scales: Any, attrs: dict) -> None:
    check(resize_inputs(shape, scales), mode="cubic", **attrs)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_tf_crop_and_resize(mode: str) -> None:
    roi = f32(0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2)
    inputs = resize_inputs((1, 2, 5, 6), None, i64(1, 2, 4, 7), roi)
    check(inputs, mode=mode, coordinate_transformation_mode="tf_crop_and_resize",
          extrapolation_value=0.5)


def test_resize_opset19_axes_and_policies() -> None:
    check(resize_inputs((1, 2, 3, 4), f32(2, 3)), opset=19, mode="linear", axes=[2, 3])
    check(resize_inputs((1, 2, 5, 4), None, i64(7, 7)), opset=19, mode="nearest", axes=[2, 3],
          keep_aspect_ratio_policy="not_larger")
    check(resize_inputs((1, 2, 5, 4), None, i64(7, 7)), opset=19, mode="linear", axes=[2, 3],
          keep_aspect_ratio_policy="not_smaller")
    check(resize_inputs((1, 2, 5, 4), f32(1, 1, 1.6, 2.5)), opset=19, mode="linear",
          coordinate_transformation_mode="half_pixel_symmetric")


def test_resize_rejects_antialias() -> None:
    with pytest.raises(GraphBuildError, match="antialias"):
        assert_vjp("Resize", resize_inputs((1, 1, 8, 8), f32(1, 1, 0.5, 0.5))[:3], opset=18,
                   mode="linear", antialias=1)


def test_resize_with_symbolic_batch_and_channels() -> None:
    # Scales of 2 keep the coordinates exact in float32, so the default tolerance holds.
    inputs = resize_inputs((2, 3, 4, 5), f32(1, 1, 2, 2))[:3]
    assert_vjp_symbolic("Resize", inputs, {"x": ["N", "C", 4, 5]}, mode="linear")
    assert_vjp_symbolic("Resize", inputs, {"x": ["N", "C", 4, 5]}, mode="nearest")


def check_at_run_time_sizes(inputs: list[tuple[str, Any]], opset: int = 17,
                            **attrs: Any) -> None:
    """``check`` with x's dims symbolic but its channels, so that the rule builds its
    matrices in the graph from run-time sizes."""
    while inputs and not inputs[-1][0]:
        inputs = inputs[:-1]
    x = inputs[0][1]
    dims: dict[str, list[int | str]] = {"x": ["N", x.shape[1], *(
        f"S{i}" for i in range(x.ndim - 2))]}
    tol = 1e-6 if attrs.get("mode") == "nearest" else 1e-5
    assert_vjp_symbolic("Resize", inputs, dims, opset=opset, adjoint_tol=tol, **attrs)
    assert_linear_vjp_on_onnxruntime("Resize", inputs, opset=opset, dims=dims, **attrs)


@pytest.mark.parametrize(("shape", "scales", "sizes", "attrs"), NEAREST,
                         ids=["x2", "asym-floor", "half", "half-ceil", "sizes-ceil",
                              "align-corners", "pytorch-half", "nhwc"])
def test_resize_nearest_at_run_time_sizes(shape: tuple[int, ...], scales: Any, sizes: Any,
                                          attrs: dict) -> None:
    check_at_run_time_sizes(resize_inputs(shape, scales, sizes), mode="nearest", **attrs)


@pytest.mark.parametrize(("shape", "scales", "sizes", "attrs"), LINEAR,
                         ids=["x2", "align-corners", "asym-sizes", "pytorch-one-row",
                              "downsample", "nhwc", "align-x2x3", "trilinear"])
def test_resize_linear_at_run_time_sizes(shape: tuple[int, ...], scales: Any, sizes: Any,
                                         attrs: dict) -> None:
    check_at_run_time_sizes(resize_inputs(shape, scales, sizes), mode="linear", **attrs)


def test_resize_at_run_time_symmetric_and_axes() -> None:
    check_at_run_time_sizes(resize_inputs((1, 2, 3, 4), f32(2, 3)), opset=19, mode="linear",
                            axes=[2, 3])
    check_at_run_time_sizes(resize_inputs((1, 2, 5, 4), f32(1, 1, 1.6, 2.5)), opset=19,
                            mode="linear", coordinate_transformation_mode="half_pixel_symmetric")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_to_sizes_given_at_run_time(mode: str) -> None:
    x = randn(RNG, 2, 3, 5, 4)
    inputs = [("x", x), ("", None), ("", None), ("sizes", i64(2, 3, 8, 3))]
    assert_vjp("Resize", inputs, mode=mode, adjoint_tol=1e-5, wrt=["x"])


def test_resize_at_run_time_sizes_refuses_cubic_in_one_line() -> None:
    inputs = resize_inputs((1, 2, 4, 5), f32(1, 1, 2, 2))[:3]
    with pytest.raises(GraphBuildError, match="mode 'cubic' at run-time sizes"):
        assert_vjp_symbolic("Resize", inputs, {"x": ["N", 2, "H", "W"]}, mode="cubic")


def test_resize_to_sizes_copying_leading_dims_resizes_only_the_rest() -> None:
    # The exporters' F.interpolate(size=...): sizes = Concat(Shape(x)[:2], [h, w]).
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["leading"]),
        helper.make_node("Concat", ["leading", "target"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear"),
    ]
    constants = [numpy_helper.from_array(i64(*v), n)
                 for n, v in (("zero", (0,)), ("two", (2,)))]
    graph = helper.make_graph(
        nodes, "interpolate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"]),
         helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    grad = gradient_model(model, wrt=["x"])
    assert sum(n.op_type == "MatMul" for n in grad.graph.node) == 2  # H and W only
    x, target = randn(RNG, 2, 3, 5, 4), i64(7, 3)
    session = ort.InferenceSession(grad.SerializeToString(), providers=["CPUExecutionProvider"])
    forward = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    u = RNG.standard_normal(x.shape).astype(np.float32)
    f_u = forward.run(["y"], {"x": u, "target": target})[0]
    v = RNG.standard_normal(f_u.shape).astype(np.float32)
    vjp = session.run([grad.graph.output[-1].name], {"x": x, "target": target, SEED_INPUT: v})[0]
    np.testing.assert_allclose(np.vdot(u, vjp), np.vdot(f_u, v), rtol=1e-5)
