"""com.microsoft fused ops expanded into standard ops: onnxruntime's own contrib kernels give
the same outputs before and after, and the expanded graph passes the adjoint test."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import randn
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import UnsupportedModelError, UnsupportedOpsError
from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import check_vjp
from fg_onnx.graph.fused import MICROSOFT_DOMAIN
from fg_onnx.graph.normalize import normalize

RNG = np.random.default_rng(31)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape, away_from=0.0)


def fused_model(op: str, inputs: list[tuple[str, np.ndarray]], outputs: int = 1,
                **attrs: Any) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One com.microsoft node; ``w:`` names are initializers, "" an omitted input."""
    names, graph_inputs, weights, feeds = [], [], [], {}
    for name, value in inputs:
        names.append(name.removeprefix("w:"))
        if not name:
            continue
        if name.startswith("w:"):
            weights.append(numpy_helper.from_array(value, name[2:]))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                              value.shape))
            feeds[name] = value
    out_names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, name="fused", domain=MICROSOFT_DOMAIN,
                            **attrs)
    graph = helper.make_graph([node], "fused", graph_inputs,
                              [helper.make_empty_tensor_value_info(n) for n in out_names],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MICROSOFT_DOMAIN, 1)])
    model.ir_version = 8
    return model, feeds


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def assert_expands(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                   reference: list[np.ndarray] | None = None) -> None:
    """The expanded model has no com.microsoft node, computes what the fused one computes
    (on onnxruntime's contrib kernel, or ``reference`` where the CPU has none) and has an
    exact gradient."""
    expanded = normalize(model)
    assert not [n for n in expanded.graph.node if n.domain == MICROSOFT_DOMAIN]
    want = run(model, feeds) if reference is None else reference
    got = run(expanded, feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    result = check_vjp(expanded, feeds)
    assert result.adjoint_error < 1e-6, (result.lhs, result.rhs)
    assert result.float32_error < 1e-4


@pytest.mark.parametrize(("activation", "params"), [
    ("Relu", []), ("LeakyRelu", [0.2]), ("Clip", [-0.5, 0.7]), ("HardSigmoid", [0.3, 0.4]),
    ("Tanh", []), ("Sigmoid", []),
])
def test_fused_conv(activation: str, params: list[float]) -> None:
    attrs: dict[str, Any] = {"activation": activation, "kernel_shape": [3, 3],
                             "pads": [1, 1, 1, 1], "strides": [2, 2]}
    if params:
        attrs["activation_params"] = params
    model, feeds = fused_model(
        "FusedConv", [("x", r(1, 2, 6, 5)), ("w:W", r(3, 2, 3, 3)), ("w:B", r(3))], **attrs)
    assert_expands(model, feeds)


def test_fused_conv_with_sum_input() -> None:
    model, feeds = fused_model(
        "FusedConv", [("x", r(1, 2, 5, 5)), ("w:W", r(3, 2, 1, 1)), ("", np.zeros(0)),
                      ("z", r(1, 3, 5, 5))], activation="Relu", kernel_shape=[1, 1])
    assert_expands(model, feeds)


def test_fused_gemm() -> None:
    model, feeds = fused_model(
        "FusedGemm", [("a", r(3, 4)), ("w:B", r(5, 4)), ("w:C", r(5))], transB=1, alpha=0.5,
        activation="LeakyRelu", activation_alpha=0.1)
    assert_expands(model, feeds)


@pytest.mark.parametrize(("trans_a", "trans_b", "alpha"), [(0, 0, 1.0), (1, 0, 0.5),
                                                           (0, 1, 2.0), (1, 1, 1.5)])
def test_fused_matmul(trans_a: int, trans_b: int, alpha: float) -> None:
    a = r(2, 4, 3) if trans_a else r(2, 3, 4)
    b = r(5, 4) if trans_b else r(4, 5)
    model, feeds = fused_model("FusedMatMul", [("a", a), ("b", b)], transA=trans_a,
                               transB=trans_b, alpha=alpha)
    assert_expands(model, feeds)


@pytest.mark.parametrize(("batch_a", "trans_a", "batch_b", "trans_b"), [
    (1, 0, 0, 0), (1, 1, 0, 0), (0, 0, 1, 0), (0, 0, 1, 1), (1, 0, 1, 1), (1, 1, 1, 0)])
def test_fused_matmul_with_batch_transposes(batch_a: int, trans_a: int, batch_b: int,
                                            trans_b: int) -> None:
    """transBatch moves the first axis behind the batch axes (attention's [T, B, D] rows)."""
    m, k, n = 3, 4, 5
    a = r(m, 2, 6, k) if batch_a and not trans_a else r(k, 2, 6, m) if batch_a else (
        r(2, 6, k, m) if trans_a else r(2, 6, m, k))
    b = r(k, 2, 6, n) if batch_b and not trans_b else r(n, 2, 6, k) if batch_b else (
        r(2, 6, n, k) if trans_b else r(2, 6, k, n))
    model, feeds = fused_model("FusedMatMul", [("a", a), ("b", b)], transBatchA=batch_a,
                               transA=trans_a, transBatchB=batch_b, transB=trans_b, alpha=0.7)
    assert_expands(model, feeds)


def test_gelus() -> None:
    x, bias = r(2, 6), r(6)
    for op, inputs, attrs in [
        ("Gelu", [("x", x)], {}),
        ("BiasGelu", [("x", x), ("w:bias", bias)], {}),
        ("FastGelu", [("x", x)], {}),
        ("FastGelu", [("x", x), ("w:bias", bias)], {}),
        ("QuickGelu", [("x", x)], {"alpha": 1.5}),
    ]:
        model, feeds = fused_model(op, inputs, **attrs)
        assert_expands(model, feeds)


def test_bias_add() -> None:
    x, bias, skip = r(2, 3, 4), r(4), r(2, 3, 4)
    model, feeds = fused_model("BiasAdd", [("x", x), ("w:bias", bias), ("skip", skip)])
    assert_expands(model, feeds, reference=[x + bias + skip])  # a CUDA-only contrib kernel


@pytest.mark.parametrize("outputs", [1, 4])
def test_skip_layer_normalization(outputs: int) -> None:
    inputs = [("x", r(2, 3, 8)), ("skip", r(2, 3, 8)), ("w:gamma", r(8)), ("w:beta", r(8)),
              ("w:bias", r(8))]
    model, feeds = fused_model("SkipLayerNormalization", inputs, outputs=outputs,
                               epsilon=1e-5)
    expanded = normalize(model)
    got, want = run(expanded, feeds), run(model, feeds)
    # onnxruntime leaves the mean and inverse-deviation outputs of its CPU kernel unwritten
    # (training-only); the normalised output and the sum are compared.
    for index in sorted({0, outputs - 1}):
        np.testing.assert_allclose(got[index], want[index], rtol=1e-5, atol=1e-5)
    result = check_vjp(expanded, feeds, output="y0")
    assert result.adjoint_error < 1e-6 and result.float32_error < 1e-4


@pytest.mark.parametrize(("sizes", "scale"), [(None, None), ([8, 8, 12], 0.3)])
def test_attention(sizes: list[int] | None, scale: float | None) -> None:
    total = 24 if sizes is None else sum(sizes)
    attrs: dict[str, Any] = {"num_heads": 2}
    if sizes is not None:
        attrs["qkv_hidden_sizes"] = sizes
    if scale is not None:
        attrs["scale"] = scale
    model, feeds = fused_model("Attention", [("x", r(2, 5, 6)), ("w:W", r(6, total)),
                                             ("w:bias", r(total))], **attrs)
    assert_expands(model, feeds)


def test_attention_with_a_mask_is_refused() -> None:
    model, _ = fused_model("Attention", [("x", r(2, 5, 6)), ("w:W", r(6, 24)),
                                         ("w:bias", r(24)),
                                         ("w:mask", np.ones((2, 5), np.int32))], num_heads=2)
    with pytest.raises(UnsupportedModelError, match="masks"):
        normalize(model)


def test_unknown_fused_op_on_the_path_says_how_to_save_the_model() -> None:
    model, _ = fused_model("NhwcConv", [("x", r(1, 5, 5, 2)), ("w:W", r(3, 2, 1, 1))])
    with pytest.raises(UnsupportedOpsError, match="ORT_ENABLE_BASIC"):
        gradient_model(model)


def test_unknown_activation_is_refused_in_one_line() -> None:
    model, _ = fused_model("FusedConv", [("x", r(1, 2, 5, 5)), ("w:W", r(3, 2, 1, 1))],
                           activation="Gelu", kernel_shape=[1, 1])
    with pytest.raises(UnsupportedModelError, match="activation 'Gelu'") as caught:
        normalize(model)
    assert "\n" not in str(caught.value)


def test_augmented_fused_cnn_keeps_its_outputs_and_is_complete() -> None:
    """FusedConv (Conv + Relu) and FusedGemm as onnxruntime writes them, augmented: the
    original output is unchanged and completeness holds."""
    nodes = [
        helper.make_node("FusedConv", ["x", "W", "B"], ["h"], domain=MICROSOFT_DOMAIN,
                         activation="Relu", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["h"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("FusedGemm", ["f", "G", "d"], ["y"], domain=MICROSOFT_DOMAIN,
                         transB=1, activation="LeakyRelu", activation_alpha=0.1),
    ]
    weights = [numpy_helper.from_array(v, k) for k, v in {
        "W": r(4, 3, 3, 3), "B": r(4), "G": r(5, 4), "d": r(5)}.items()]
    graph = helper.make_graph(nodes, "fused_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [2, 3, 8, 8])],
                              [helper.make_empty_tensor_value_info("y")], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MICROSOFT_DOMAIN, 1)])
    model.ir_version = 8
    augmented = build_fullgrad(model, AugmentOptions(implicit_biases=True)).model
    x = r(2, 3, 8, 8)
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    y, score, grad, bias_total = session.run(
        ["y", "fg_score", "fg_input_grad", "fg_bias_total"],
        {"x": x, "fg_target": np.array([-1, 3], np.int64)})
    np.testing.assert_allclose(y, run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((grad * x).sum(axis=(1, 2, 3)) + bias_total, score,
                               rtol=1e-4, atol=1e-5)
