"""Adjoint tests of the activation rules (inputs kept away from each op's kinks)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_runs_on_onnxruntime, assert_vjp, onnxruntime_gradients, randn

from fg_onnx.grad import GRAD_PREFIX, gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(2024)


def r(*shape: int, scale: float = 1.0, kinks: tuple[float, ...] = ()) -> np.ndarray:
    """Scaled normal samples, none within 0.05 of any kink."""
    values = randn(RNG, *shape) * np.float32(scale)
    for kink in kinks:
        close = np.abs(values - kink) < 0.05
        values[close] = kink + np.where(values[close] >= kink, 0.1, -0.1)
    return values.astype(np.float32)


def scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def test_relu() -> None:
    assert_vjp("Relu", [("a", r(3, 5, kinks=(0.0,)))])


@pytest.mark.parametrize("attrs", [{}, {"alpha": 0.2}, {"alpha": -0.5}])
def test_leaky_relu(attrs: dict) -> None:
    assert_vjp("LeakyRelu", [("x", r(2, 3, 5, kinks=(0.0,)))], **attrs)


@pytest.mark.parametrize(
    "inputs",
    [
        [("x", r(2, 3, 4, 4, kinks=(0.0,))), ("w:slope", r(3, 1, 1))],
        [("x", r(2, 3, 4, 4, kinks=(0.0,))), ("slope", r(3, 1, 1))],
        [("x", r(2, 5, kinks=(0.0,))), ("slope", r(5))],
        [("x", r(2, 5, kinks=(0.0,))), ("slope", r(1))],
    ],
    ids=["channel-weight", "channel-input", "last-axis", "single"],
)
def test_prelu(inputs: list) -> None:
    assert_vjp("PRelu", inputs)


@pytest.mark.parametrize(
    "bounds",
    [
        [("w:lo", scalar(0.0)), ("w:hi", scalar(6.0))],
        [("w:lo", scalar(-1.0))],
        [("", None), ("w:hi", scalar(2.0))],
        [],
        [("lo", scalar(-1.0)), ("hi", scalar(2.0))],
        [("lo", scalar(1.0))],
        [("", None), ("hi", scalar(0.5))],
        [("lo", scalar(1.0)), ("hi", scalar(-1.0))],
    ],
    ids=["relu6", "min-only", "max-only", "no-bounds", "bound-grads", "min-grad", "max-grad",
         "min-above-max"],
)
def test_clip(bounds: list) -> None:
    x = r(3, 4, 5, scale=4.0, kinks=(-1.0, 0.0, 0.5, 1.0, 2.0, 6.0))
    assert_vjp("Clip", [("x", x), *bounds])


def test_clip_float_bound_inputs_without_x_gradient() -> None:
    x = r(4, 6, scale=3.0, kinks=(-0.5, 0.7))
    assert_vjp("Clip", [("x", x), ("lo", scalar(-0.5)), ("hi", scalar(0.7))], wrt=["lo", "hi"])


@pytest.mark.parametrize(
    ("op", "scale", "kinks", "attrs"),
    [
        ("Sigmoid", 2.0, (), {}),
        ("HardSigmoid", 4.0, (-2.5, 2.5), {}),
        ("HardSigmoid", 2.0, (-0.5, 1.5), {"alpha": 0.5, "beta": 0.25}),
        ("HardSwish", 4.0, (-3.0, 3.0), {}),
        ("Tanh", 1.5, (), {}),
        ("Erf", 1.5, (), {}),
        ("Softplus", 3.0, (), {}),
        ("Softsign", 2.0, (), {}),
        ("Elu", 2.0, (0.0,), {}),
        ("Elu", 2.0, (0.0,), {"alpha": 0.5}),
        ("Selu", 2.0, (0.0,), {}),
        ("Selu", 2.0, (0.0,), {"alpha": 1.5, "gamma": 0.8}),
        ("Celu", 2.0, (0.0,), {"alpha": 0.7}),
        ("ThresholdedRelu", 2.0, (1.0,), {}),
        ("ThresholdedRelu", 2.0, (-0.3,), {"alpha": -0.3}),
        ("Shrink", 2.0, (-0.5, 0.5), {}),
        ("Shrink", 2.0, (-1.0, 1.0), {"lambd": 1.0, "bias": 0.3}),
    ],
)
def test_unary_opset17(op: str, scale: float, kinks: tuple, attrs: dict) -> None:
    assert_vjp(op, [("x", r(2, 3, 7, scale=scale, kinks=kinks))], **attrs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    assert_vjp("Gelu", [("x", r(2, 3, 7, scale=2.5))], opset=20, approximate=approximate)


def test_gelu_default_approximation() -> None:
    assert_vjp("Gelu", [("x", r(4, 9, scale=2.5))], opset=20)


def test_mish() -> None:
    assert_vjp("Mish", [("x", r(2, 3, 7, scale=3.0))], opset=18)


@pytest.mark.parametrize("attrs", [{}, {"alpha": 1.702}])
def test_swish(attrs: dict) -> None:
    assert_vjp("Swish", [("x", r(2, 3, 7, scale=3.0))], opset=24, **attrs)


@pytest.mark.parametrize(
    ("op", "extra", "opset", "attrs"),
    [
        *[(op, [], 17, {}) for op in (
            "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Softplus",
            "Softsign", "Elu", "Selu", "Celu", "ThresholdedRelu", "Shrink",
        )],
        ("PRelu", [("slope", scalar(0.3).reshape(1))], 17, {}),
        ("Clip", [("lo", scalar(-0.5)), ("hi", scalar(0.5))], 17, {}),
        ("Clip", [("w:lo", scalar(0.0))], 17, {}),
        ("Gelu", [], 20, {"approximate": "none"}),
        ("Gelu", [], 20, {"approximate": "tanh"}),
        ("Mish", [], 18, {}),
        ("Swish", [], 24, {"alpha": 0.5}),
    ],
)
def test_gradient_graph_runs_on_onnxruntime(op: str, extra: list, opset: int,
                                            attrs: dict) -> None:
    x = r(2, 3, 5, scale=3.0, kinks=(-3.0, -0.5, 0.0, 0.5, 1.0, 3.0))
    assert_runs_on_onnxruntime(op, [("x", x), *extra], opset=opset, **attrs)


def _clip_gradient(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    bounds = [("w:lo", scalar(lo)), ("w:hi", scalar(hi))]
    model, feeds = single_node_model("Clip", [("x", x), *bounds])
    return onnxruntime_gradients(model, feeds, np.ones_like(x))[f"{GRAD_PREFIX}x"]


def test_clip_gradient_is_zero_on_the_bounds_as_in_pytorch() -> None:
    x = np.array([-1.0, 0.0, 0.5, 6.0, 7.0], dtype=np.float32)
    np.testing.assert_array_equal(_clip_gradient(x, 0.0, 6.0), [0, 0, 1, 0, 0])


def test_activation_masks_leave_the_pre_activation_to_the_activation() -> None:
    # onnxruntime fuses Conv + Relu/Clip only when the activation is the Conv output's sole
    # consumer: the masks must read the activation's output.
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    for act, extra in (("Relu", {}), ("Clip", {"lo": 0.0, "hi": 6.0})):
        nodes = [h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])]
        nodes.append(h.make_node(act, ["c", *(f"{k}_v" for k in extra)], ["y"]))
        weight = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
        inits = [onnx.numpy_helper.from_array(weight, "W")]
        inits += [onnx.numpy_helper.from_array(scalar(v), f"{k}_v") for k, v in extra.items()]
        graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", f32, [1, 3, 5, 5])],
                             [h.make_tensor_value_info("y", f32, None)], inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        grad = gradient_model(model)
        assert [n.op_type for n in grad.graph.node if "c" in n.input] == [act]


@pytest.mark.parametrize(
    ("op", "extra"),
    [("LeakyRelu", []), ("PRelu", [("w:s", r(3, 1, 1))]), ("Elu", []), ("Selu", []),
     ("Celu", [])],
)
def test_two_sided_slopes_are_masks_not_where(op: str, extra: list) -> None:
    # onnxruntime's CPU Where kernel is about twice as slow as Cast + Mul (DEVELOPING.md).
    model, _ = single_node_model(op, [("x", r(2, 3, 4, 4, kinks=(0.0,))), *extra])
    ops = [n.op_type for n in gradient_model(model).graph.node]
    assert "Where" not in ops and "Cast" in ops
