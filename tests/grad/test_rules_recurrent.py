"""Adjoint tests of the RNN, GRU and LSTM rules (fg_onnx/grad/rules/recurrent.py) and of
the float64 bodies the tests difference (fg_onnx/grad/recurrent_reference.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import assert_vjp, randn, with_symbolic_dims
from onnx import TensorProto, helper

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import SEED_INPUT, gradient_model
from fg_onnx.grad.check import check_vjp, only_output, reference_evaluator, single_node_model
from fg_onnx.grad.check import to_float64 as float64_model

STEPS, BATCH, FEATURES, HIDDEN = 4, 3, 2, 3
LENGTHS = np.array([4, 2, 3], np.int32)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
OUTPUTS = {"RNN": 2, "GRU": 2, "LSTM": 3}
DIRECTIONS = ("forward", "reverse", "bidirectional")
VARIANTS = [("RNN", {}), ("GRU", {"linear_before_reset": 0}),
            ("GRU", {"linear_before_reset": 1}), ("LSTM", {})]


def _inputs(op: str, direction: str = "forward", lens: bool = False, states: bool = False,
            peepholes: bool = False, layout: int = 0, seed: int = 0) -> list[tuple[str, Any]]:
    """(name, value) pairs for single_node_model; states and lens are graph inputs or
    constants, the states differentiated when given."""
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    rows = GATES[op] * HIDDEN
    x_shape = (BATCH, STEPS, FEATURES) if layout else (STEPS, BATCH, FEATURES)
    state_shape = (BATCH, d, HIDDEN) if layout else (d, BATCH, HIDDEN)
    inputs: list[tuple[str, Any]] = [
        ("x", randn(rng, *x_shape)), ("w:W", randn(rng, d, rows, FEATURES)),
        ("w:R", randn(rng, d, rows, HIDDEN) * 0.5), ("w:B", randn(rng, d, 2 * rows)),
        ("w:lens", LENGTHS) if lens else ("", None),
        ("h0", randn(rng, *state_shape)) if states else ("", None),
    ]
    if op == "LSTM":
        inputs.append(("c0", randn(rng, *state_shape)) if states else ("", None))
        inputs.append(("w:P", randn(rng, d, 3 * HIDDEN)) if peepholes else ("", None))
    while not inputs[-1][0]:
        inputs.pop()
    return inputs


@pytest.mark.parametrize(("op", "attrs"), VARIANTS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("lens", [False, True])
def test_sequence_output(op: str, attrs: dict[str, int], direction: str, lens: bool) -> None:
    # with sequence_lens, also the initial states (and LSTM's peepholes)
    assert_vjp(op, _inputs(op, direction, lens=lens, states=lens, peepholes=lens),
               outputs=OUTPUTS[op], output="y0", hidden_size=HIDDEN, direction=direction,
               **attrs)


@pytest.mark.parametrize(("op", "attrs", "output"),
                         [(op, attrs, "y1") for op, attrs in VARIANTS] + [("LSTM", {}, "y2")])
def test_last_states(op: str, attrs: dict[str, int], output: str) -> None:
    assert_vjp(op, _inputs(op, "bidirectional", lens=True, states=True, peepholes=True),
               outputs=OUTPUTS[op], output=output, hidden_size=HIDDEN,
               direction="bidirectional", **attrs)


ALL_ACTIVATIONS = [("Relu", [], []), ("Tanh", [], []), ("Sigmoid", [], []),
                   ("Affine", [0.7], [0.2]), ("LeakyRelu", [0.3], []),
                   ("ThresholdedRelu", [0.3], []), ("ScaledTanh", [0.7], [1.3]),
                   ("HardSigmoid", [0.3], [0.4]), ("Elu", [0.7], []), ("Softsign", [], []),
                   ("Softplus", [], [])]


@pytest.mark.parametrize(("name", "alpha", "beta"), ALL_ACTIVATIONS)
def test_rnn_activation(name: str, alpha: list[float], beta: list[float]) -> None:
    attrs: dict[str, Any] = {"activations": [name, "Tanh"]}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    assert_vjp("RNN", _inputs("RNN", "bidirectional", lens=True), outputs=2, output="y0",
               hidden_size=HIDDEN, direction="bidirectional", **attrs)


def test_gru_and_lstm_activations() -> None:
    # alpha and beta are consumed in order by the functions that take them
    assert_vjp("GRU", _inputs("GRU", "reverse", lens=True), outputs=2, output="y0",
               hidden_size=HIDDEN, direction="reverse", activations=["HardSigmoid", "Elu"],
               activation_alpha=[0.3, 0.5], activation_beta=[0.4])
    assert_vjp("LSTM", _inputs("LSTM", "bidirectional", states=True, peepholes=True),
               outputs=3, output="y0", hidden_size=HIDDEN, direction="bidirectional",
               activations=["HardSigmoid", "Tanh", "Softsign", "Sigmoid", "LeakyRelu",
                            "ScaledTanh"],
               activation_alpha=[0.3, 0.2, 0.9], activation_beta=[0.4, 1.1])


@pytest.mark.parametrize(("op", "attrs"), VARIANTS)
def test_clip(op: str, attrs: dict[str, int]) -> None:
    # a small clip reaches many gate pre-activations (onnxruntime clips them all, after
    # LSTM's peephole terms)
    assert_vjp(op, _inputs(op, "bidirectional", lens=True, states=True, peepholes=True),
               outputs=OUTPUTS[op], output="y0", hidden_size=HIDDEN,
               direction="bidirectional", clip=0.8, **attrs)


@pytest.mark.parametrize(("op", "attrs"), VARIANTS)
@pytest.mark.parametrize("output", ["y0", "y1"])
def test_batch_major_layout(op: str, attrs: dict[str, int], output: str) -> None:
    model, feeds = single_node_model(
        op, _inputs(op, "bidirectional", lens=True, states=True, peepholes=True, layout=1),
        outputs=OUTPUTS[op], hidden_size=HIDDEN, direction="bidirectional", layout=1, **attrs)
    # onnxruntime runs no layout=1 recurrent op: the float32 side runs on the reference
    result = check_vjp(model, feeds, output=output, float32_fallback=True)
    assert result.adjoint_error < 1e-6 and result.float32_error < 1e-4


def test_batch_major_layout_matches_time_major() -> None:
    """The same LSTM in both layouts has the same gradients (transposed)."""
    time_major = _inputs("LSTM", "bidirectional", lens=True, states=True, peepholes=True)
    batch_major = [(n, np.swapaxes(v, 0, 1) if n in ("x", "h0", "c0") else v)
                   for n, v in time_major]
    grads = []
    for layout, inputs in ((0, time_major), (1, batch_major)):
        model, feeds = single_node_model("LSTM", inputs, outputs=3, hidden_size=HIDDEN,
                                         direction="bidirectional", layout=layout)
        grad_model = gradient_model(only_output(model, "y1"), "y1", ["x", "h0", "c0"])
        seed = np.ones((BATCH, 2, HIDDEN) if layout else (2, BATCH, HIDDEN), np.float32)
        grads.append(reference_evaluator(grad_model).run(None, {**feeds, SEED_INPUT: seed}))
    for a, b in zip(grads[0][1:], grads[1][1:], strict=True):
        np.testing.assert_allclose(a, np.swapaxes(b, 0, 1), rtol=1e-5, atol=1e-6)


def test_open_sequence_length_runs_at_two_lengths() -> None:
    """T symbolic: the gradient graph computes its sizes at run time."""
    for steps in (4, 7):
        rng = np.random.default_rng(steps)
        inputs = _inputs("LSTM", "bidirectional", states=True)
        inputs[0] = ("x", randn(rng, steps, BATCH, FEATURES))
        model, feeds = single_node_model("LSTM", inputs, outputs=3, hidden_size=HIDDEN,
                                         direction="bidirectional")
        model = with_symbolic_dims(model, {"x": ["T", "N", FEATURES],
                                           "h0": [2, "N", HIDDEN], "c0": [2, "N", HIDDEN]})
        result = check_vjp(model, feeds, output="y0")
        assert result.adjoint_error < 1e-6 and result.float32_error < 1e-4


@pytest.mark.parametrize(("op", "attrs"), VARIANTS)
def test_reference_matches_onnxruntime(op: str, attrs: dict[str, int]) -> None:
    """The float64 bodies the finite differences run compute what onnxruntime computes."""
    inputs = _inputs(op, "bidirectional", lens=True, states=True, peepholes=True)
    extra = {"activations": ["Relu", "HardSigmoid", "Elu", "Softsign", "LeakyRelu",
                             "ScaledTanh"][:2 * (OUTPUTS[op] if op != "RNN" else 1)],
             "activation_alpha": [0.3, 0.2, 0.9], "activation_beta": [0.4, 1.1]}
    coupled = {"input_forget": 1} if op == "LSTM" else {}
    for options in ({}, extra, {"clip": 0.8}, coupled):
        model, feeds = single_node_model(op, inputs, outputs=OUTPUTS[op], hidden_size=HIDDEN,
                                         direction="bidirectional", **attrs, **options)
        model.ir_version = min(model.ir_version, 10)
        names = [o.name for o in model.graph.output]
        got = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(names, feeds)
        want = reference_evaluator(float64_model(model)).run(
            names, {k: v.astype(np.float64) if v.dtype == np.float32 else v
                    for k, v in feeds.items()})
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _refused(op: str, inputs: list[tuple[str, Any]], match: str, outputs: int = 2,
             **attrs: Any) -> None:
    model, _ = single_node_model(op, inputs, outputs=outputs, hidden_size=HIDDEN, **attrs)
    with pytest.raises(GraphBuildError, match=match):
        gradient_model(model, wrt=["x"])


@pytest.mark.parametrize("coupled", [0, 1])
@pytest.mark.parametrize("output", ["y0", "y2"])
def test_lstm_without_peepholes(output: str, coupled: int) -> None:
    # the cell Scan then gets its gates from outside
    assert_vjp("LSTM", _inputs("LSTM", "bidirectional", lens=True, states=True),
               outputs=3, output=output, hidden_size=HIDDEN, direction="bidirectional",
               input_forget=coupled)


@pytest.mark.parametrize("output", ["y0", "y2"])
def test_lstm_input_forget(output: str) -> None:
    # f = 1 − i: the forget gate's weights are unused, a_i reaches the cell twice
    assert_vjp("LSTM", _inputs("LSTM", "bidirectional", lens=True, states=True, peepholes=True),
               outputs=3, output=output, hidden_size=HIDDEN, direction="bidirectional",
               input_forget=1)


def test_refusals() -> None:
    _refused("RNN", _inputs("RNN"), "not one of", activations=["Gelu"])
    _refused("GRU", _inputs("GRU", "bidirectional"), "takes 4", direction="bidirectional",
             activations=["Sigmoid", "Tanh"])


def test_refuses_a_node_without_y() -> None:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, BATCH, FEATURES])
    node = helper.make_node("RNN", ["x", "W", "R"], ["", "h"], hidden_size=HIDDEN)
    weights = [onnx.numpy_helper.from_array(randn(rng, 1, HIDDEN, n), name)
               for name, n in (("W", FEATURES), ("R", HIDDEN))]
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info(
        "h", TensorProto.FLOAT, [1, BATCH, HIDDEN])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphBuildError, match="output Y"):
        gradient_model(model, wrt=["x"])


def test_refuses_computed_weights() -> None:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, BATCH, FEATURES])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, HIDDEN, FEATURES])
    r = onnx.numpy_helper.from_array(randn(rng, 1, HIDDEN, HIDDEN), "R")
    node = helper.make_node("RNN", ["x", "w", "R"], ["y"], hidden_size=HIDDEN)
    graph = helper.make_graph([node], "g", [x, w], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)], [r])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphBuildError, match="W depends on the explained input"):
        gradient_model(model, wrt=["x", "w"])
