"""Adjoint tests of the normalisation rules (the full Jacobian through mean and variance)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    ADJOINT_TOL,
    FLOAT32_TOL,
    assert_runs_on_onnxruntime,
    assert_vjp,
    assert_vjp_symbolic,
    randn,
    run_on_onnxruntime,
)

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import SEED_INPUT, gradient_model
from fg_onnx.grad.check import check_vjp, reference_evaluator, single_node_model, to_float64

RNG = np.random.default_rng(1357)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


def positive(*shape: int) -> np.ndarray:
    return (np.abs(r(*shape)) + 0.5).astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4), (2, 3, 5)])
def test_batch_norm(shape: tuple[int, ...]) -> None:
    c = shape[1]
    inputs = [("x", r(*shape)), ("w:s", r(c)), ("w:b", r(c)), ("w:m", r(c)), ("w:v", positive(c))]
    assert_vjp("BatchNormalization", inputs, epsilon=1e-3)
    assert_runs_on_onnxruntime("BatchNormalization", inputs, epsilon=1e-3)


def test_batch_norm_with_computed_scale() -> None:
    inputs = [("x", r(2, 3, 4)), ("w:s", r(3)), ("w:b", r(3)), ("w:m", r(3)), ("w:v", positive(3))]
    model_inputs = [*inputs[:4], ("v", positive(3))]
    assert_vjp("BatchNormalization", model_inputs, wrt=["x"])


def test_batch_norm_rejects_training_mode() -> None:
    inputs = [("x", r(2, 3, 4)), ("w:s", r(3)), ("w:b", r(3)), ("w:m", r(3)), ("w:v", positive(3))]
    with pytest.raises(GraphBuildError, match="training_mode"):
        assert_vjp("BatchNormalization", inputs, training_mode=1, outputs=3)


@pytest.mark.parametrize(
    ("shape", "axis", "with_bias"),
    [((2, 3, 6), -1, True), ((2, 3, 4, 5), 2, False), ((3, 2, 4), 1, True), ((4, 5), 0, True)],
)
def test_layer_norm(shape: tuple[int, ...], axis: int, with_bias: bool) -> None:
    normalized = shape[axis:]
    inputs = [("x", r(*shape)), ("w:s", r(*normalized))]
    if with_bias:
        inputs.append(("w:b", r(*normalized)))
    assert_vjp("LayerNormalization", inputs, axis=axis, epsilon=1e-3)
    assert_runs_on_onnxruntime("LayerNormalization", inputs, axis=axis, epsilon=1e-3)


@pytest.mark.parametrize("output", ["y1", "y2"])
def test_layer_norm_statistics_outputs(output: str) -> None:
    inputs = [("x", r(2, 3, 5)), ("w:s", r(3, 5)), ("w:b", r(3, 5))]
    assert_vjp("LayerNormalization", inputs, outputs=3, output=output, axis=1, epsilon=1e-2)


def test_instance_norm() -> None:
    inputs = [("x", r(2, 3, 4, 5)), ("w:s", r(3)), ("w:b", r(3))]
    assert_vjp("InstanceNormalization", inputs, epsilon=1e-3)
    assert_runs_on_onnxruntime("InstanceNormalization", inputs, epsilon=1e-3)
    assert_vjp("InstanceNormalization", [("x", r(2, 2, 7)), ("w:s", r(2)), ("w:b", r(2))])


@pytest.mark.parametrize(("opset", "per_channel"), [(18, False), (21, True)])
@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (2, 4, 5)])
def test_group_norm(opset: int, per_channel: bool, shape: tuple[int, ...]) -> None:
    groups = 2
    c = shape[1] if per_channel else groups
    inputs = [("x", r(*shape)), ("w:s", r(c)), ("w:b", r(c))]
    # Opset 21 normalises in float32 by default (stash_type=1) even for float64 data, which
    # would swamp the float64 finite differences; stash_type=11 keeps float64 there.
    stash = {"stash_type": 11} if opset >= 21 else {}
    model, feeds = single_node_model("GroupNormalization", inputs, opset=opset,
                                     num_groups=groups, epsilon=1e-3, **stash)
    # onnx's shape inference leaves GroupNormalization's output untyped; Y is shaped like X.
    model.graph.output[0].type.CopyFrom(model.graph.input[0].type)
    result = check_vjp(model, feeds)
    assert result.adjoint_error < ADJOINT_TOL, (result.lhs, result.rhs)
    assert result.float32_error < FLOAT32_TOL
    grad_model = gradient_model(model)
    seed = RNG.standard_normal(shape).astype(np.float32)
    got = run_on_onnxruntime(grad_model, {**feeds, SEED_INPUT: seed}, ["grad_x"])["grad_x"]
    want = reference_evaluator(grad_model).run(["grad_x"], {**feeds, SEED_INPUT: seed})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [((2, 7, 3, 4), {"size": 5, "alpha": 0.5, "beta": 0.75, "bias": 1.5}),
     ((1, 5, 3, 2), {"size": 3, "alpha": 0.8, "beta": 1.2, "bias": 2.0})],
    ids=["size5", "size3"],
)
def test_lrn(shape: tuple[int, ...], attrs: dict) -> None:
    x = r(*shape)
    assert_vjp("LRN", [("x", x)], **attrs)
    assert_runs_on_onnxruntime("LRN", [("x", x)], **attrs)


def test_lrn_even_size_on_reference_evaluator() -> None:
    """onnxruntime's LRN takes odd sizes only; the lopsided window of even sizes (mirrored in
    the VJP) is checked in float64 on the corrected reference evaluator."""
    x = r(2, 6, 3, 3).astype(np.float64)
    model, _ = single_node_model("LRN", [("x", x.astype(np.float32))], size=4, alpha=0.3,
                                 beta=0.6)
    forward = reference_evaluator(to_float64(model))
    backward = reference_evaluator(to_float64(gradient_model(model)))
    u, v, eps = RNG.standard_normal(x.shape), RNG.standard_normal(x.shape), 1e-6
    jvp = (forward.run(["y0"], {"x": x + eps * u})[0]
           - forward.run(["y0"], {"x": x - eps * u})[0]) / (2 * eps)
    vjp = backward.run(["grad_x"], {"x": x, SEED_INPUT: v})[0]
    assert float(np.vdot(u, vjp)) == pytest.approx(float(np.vdot(jvp, v)), rel=1e-6)


def test_norms_with_symbolic_dims() -> None:
    inputs = [("x", r(2, 3, 5)), ("w:s", r(5)), ("w:b", r(5))]
    for output in ("y0", "y1", "y2"):
        assert_vjp_symbolic("LayerNormalization", inputs, {"x": ["N", "T", 5]}, outputs=3,
                            output=output, axis=-1, epsilon=1e-2)
    assert_vjp_symbolic("LayerNormalization", [("x", r(2, 3, 4)), ("w:s", r(4))],
                        {"x": ["N", "T", "D"]}, outputs=3, output="y2", axis=-1,
                        epsilon=1e-2)
    assert_vjp_symbolic("LRN", [("x", r(2, 5, 3, 3))], {"x": ["N", 5, "H", "W"]}, size=3,
                        alpha=0.5, beta=0.75)
    assert_vjp_symbolic("InstanceNormalization", [("x", r(2, 3, 4)), ("w:s", r(3)),
                                                  ("w:b", r(3))], {"x": ["N", 3, "L"]})


@pytest.mark.parametrize(("p", "axis"), [(2, -1), (2, 1), (1, 0), (1, -1)])
def test_lp_normalization(p: int, axis: int) -> None:
    x = randn(RNG, 3, 4, 5, away_from=0.0)  # sign(x) is constant near every sample
    assert_vjp("LpNormalization", [("x", x)], p=p, axis=axis)


@pytest.mark.parametrize("axes", [None, [1], [0, 2]])
def test_mean_variance_normalization(axes: list[int] | None) -> None:
    attrs = {} if axes is None else {"axes": axes}
    assert_vjp("MeanVarianceNormalization", [("x", r(2, 3, 4, 5))], **attrs)
