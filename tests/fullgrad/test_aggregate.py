"""The in-graph FullGrad map: a per-channel bias tap needs only |gradient|, not the product."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from float16_emulation import run_emulated
from onnx import TensorProto, helper

from fg_onnx.fullgrad.aggregate import MapTerm, saliency_map
from fg_onnx.fullgrad.precision import Numerics
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.float16 import to_float16
from fg_onnx.graph.info import GraphInfo

RNG = np.random.default_rng(11)
CHANNELS, SPATIAL, SIZE = 5, (3, 4), (9, 10)


def _maps_model(layout: str) -> onnx.ModelProto:
    """Outputs the map of bias ⊙ gradient computed from the product ("product") and from
    |gradient| with |bias| as channel weights ("weighted")."""
    axis = 1 if layout == "nchw" else 3
    shape: list[int | str] = ["N", CHANNELS, *SPATIAL] if axis == 1 else ["N", *SPATIAL, CHANNELS]
    graph = helper.make_graph(
        [], "maps",
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [CHANNELS])], [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    b = GraphBuilder(GraphInfo(model))
    batch = b.Slice(b.Shape("g"), b.ints([0]), b.ints([1]))
    bias_shape = [1, CHANNELS, 1, 1] if axis == 1 else [CHANNELS]
    product = b.Mul("g", b.Reshape("bias", b.ints(bias_shape)))
    plain = MapTerm(product, axis, CHANNELS, SPATIAL)
    weighted = MapTerm("g", axis, CHANNELS, SPATIAL, weights=b.Abs("bias"))
    for name, term in (("product", plain), ("weighted", weighted)):
        b.op_multi("Identity", saliency_map(b, [term], batch, SIZE, TensorProto.FLOAT),
                   outputs=[name])
        model.graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *SIZE]))
    b.apply_to(model)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("batch", [3, 1, 0])
def test_weighted_term_equals_the_product_term(layout: str, batch: int) -> None:
    session = ort.InferenceSession(_maps_model(layout).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    shape = (batch, CHANNELS, *SPATIAL) if layout == "nchw" else (batch, *SPATIAL, CHANNELS)
    g = RNG.standard_normal(shape).astype(np.float32)
    bias = np.array([0.5, -2.0, 0.0, 3.0, -0.25], dtype=np.float32)  # signs and a zero
    product, weighted = session.run(["product", "weighted"], {"g": g, "bias": bias})
    assert product.shape == weighted.shape == (batch, *SIZE)
    np.testing.assert_allclose(weighted, product, rtol=1e-5, atol=1e-6)
    if batch:
        assert np.ptp(weighted) > 0.5  # a real map, not a constant


def test_term_of_a_zero_bias_is_zero() -> None:
    session = ort.InferenceSession(_maps_model("nchw").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    g = RNG.standard_normal((2, CHANNELS, *SPATIAL)).astype(np.float32)
    outputs = session.run(None, {"g": g, "bias": np.zeros(CHANNELS, np.float32)})
    assert all(not np.any(o) for o in outputs)


def _conv_net(bias: np.ndarray | None) -> onnx.ModelProto:
    rng = np.random.default_rng(5)  # the same weights for every bias
    weights = {"W1": rng.standard_normal((4, 3, 3, 3)), "W2": rng.standard_normal((2, 4, 1, 1)),
               "B2": np.array([0.3, -0.2])}
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    first = ["x", "W1"]
    if bias is not None:
        inits.append(onnx.numpy_helper.from_array(bias.astype(np.float32), "B1"))
        first.append("B1")
    nodes = [helper.make_node("Conv", first, ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["logits"])]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_bias_adds_no_work_and_changes_nothing() -> None:
    import fg_onnx

    def run(model: onnx.ModelProto) -> list[np.ndarray]:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        feeds = {"x": x, "fg_target": np.array([0, 1, -1], np.int64)}
        return session.run(["fg_saliency", "fg_bias_total", "fg_score"], feeds)

    x = RNG.standard_normal((3, 3, 6, 6)).astype(np.float32)
    zero, none = fg_onnx.augment(_conv_net(np.zeros(4))), fg_onnx.augment(_conv_net(None))
    some = fg_onnx.augment(_conv_net(np.array([0.1, 0.0, -0.4, 0.2])))
    assert len(zero.graph.node) == len(none.graph.node) < len(some.graph.node)
    for a, c in zip(run(zero), run(none), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)
    saliency, total, score = run(some)
    grad_x = ort.InferenceSession(some.SerializeToString(), providers=["CPUExecutionProvider"])
    assert not np.allclose(saliency, run(none)[0])
    inputs = {"x": x, "fg_target": np.array([0, 1, -1], np.int64)}
    input_grad = grad_x.run(["fg_input_grad"], inputs)[0]
    np.testing.assert_allclose((input_grad * x).sum((1, 2, 3)) + total, score, rtol=1e-4)


def test_float16_term_of_a_zero_gradient_is_zero_with_an_epsilon_below_float16() -> None:
    """ε·S/Σ|b| is below float16's smallest number for a large bias: ψ is computed in
    float32 after the reductions, else an all-zero gradient gives 0/0."""
    graph = helper.make_graph([], "maps", [helper.make_tensor_value_info(
        "g", TensorProto.FLOAT, ["N", CHANNELS, *SPATIAL])], [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    b = GraphBuilder(GraphInfo(model))
    numerics = Numerics(b, TensorProto.FLOAT, True, 256.0)
    batch = b.Slice(b.Shape("g"), b.ints([0]), b.ints([1]))
    weights = b.const(np.full(CHANNELS, 1 / CHANNELS, np.float32))
    term = MapTerm("g", 1, CHANNELS, SPATIAL, weights=weights, epsilon=1e-9)
    saliency = saliency_map(b, [term], batch, SIZE, numerics.elem, numerics.wide)
    b.op_multi("Identity", saliency, outputs=["map"])
    model.graph.output.append(helper.make_tensor_value_info("map", TensorProto.FLOAT, None))
    b.apply_to(model)
    to_float16(model, numerics.float32)
    zero = np.zeros((2, CHANNELS, *SPATIAL), np.float32)
    np.testing.assert_array_equal(run_emulated(model, {"g": zero})["map"], 0)
