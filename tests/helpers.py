"""Shared assertions for the tests (importable as ``helpers`` through pytest's pythonpath)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from fg_onnx.fullgrad.contract import outputs_completeness_error
from fg_onnx.grad import GRAD_PREFIX, SEED_INPUT, gradient_model
from fg_onnx.grad.check import check_vjp, reference_evaluator, single_node_model
from fg_onnx.graph.load import ModelSource

ADJOINT_TOL = 1e-6
FLOAT32_TOL = 1e-4


def assert_vjp(
    op_type: str,
    inputs: list[tuple[str, Any]],
    *,
    outputs: int = 1,
    output: str | None = None,
    wrt: list[str] | None = None,
    opset: int = 17,
    adjoint_tol: float = ADJOINT_TOL,
    float32_tol: float = FLOAT32_TOL,
    provider: str = "any",
    **attrs: Any,
) -> None:
    """Adjoint test of one node's VJP rule (see ``single_node_model`` for ``inputs``)."""
    model, feeds = single_node_model(op_type, inputs, outputs=outputs, opset=opset, **attrs)
    result = check_vjp(model, feeds, wrt=wrt, output=output, provider=provider)
    assert not result.wrong_shapes, f"{op_type}: gradients of {result.wrong_shapes} misshaped"
    assert result.adjoint_error < adjoint_tol, (
        f"{op_type}: <u, VJP v> = {result.lhs:.10g} but <JVP u, v> = {result.rhs:.10g}"
    )
    assert result.float32_error < float32_tol, (
        f"{op_type}: float32 VJP on onnxruntime differs by {result.float32_error:.3g} (relative)"
    )


def randn(rng: np.random.Generator, *shape: int, away_from: float | None = None,
          margin: float = 0.05) -> np.ndarray:
    """Float32 normal samples; with ``away_from``, none within ``margin`` of that kink."""
    values = rng.standard_normal(shape).astype(np.float32)
    if away_from is not None:
        close = np.abs(values - away_from) < margin
        values[close] = away_from + np.where(values[close] >= away_from, margin, -margin) * 2
    return values


def run_on_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                       names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named outputs (default: all) of ``model`` on onnxruntime's CPU provider."""
    if model.ir_version > 10:  # newer IR versions than onnxruntime reads
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.ir_version = 10
    names = names or [o.name for o in model.graph.output]
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feeds), strict=True))


def onnxruntime_gradients(
    source: ModelSource, feeds: dict[str, np.ndarray], seed: np.ndarray, *,
    output: str | None = None, wrt: list[str] | None = None, provider: str = "any",
) -> dict[str, np.ndarray]:
    """Every output of ``gradient_model(source, output, wrt)`` (the forward outputs and one
    ``grad_<name>`` per tensor of ``wrt``), run in float32 on onnxruntime's CPU provider with
    ``seed`` as the cotangent of the differentiated output."""
    grad_model = gradient_model(source, output=output, wrt=wrt, provider=provider)
    return run_on_onnxruntime(grad_model, {**feeds, SEED_INPUT: seed})


def assert_runs_on_onnxruntime(
    op_type: str, inputs: list[tuple[str, Any]], *, outputs: int = 1, opset: int = 17,
    provider: str = "any", **attrs: Any,
) -> None:
    """The float32 gradient graph of one node loads and runs on onnxruntime's CPU provider
    (no silent fallback) and agrees with the reference evaluator."""
    model, feeds = single_node_model(op_type, inputs, outputs=outputs, opset=opset, **attrs)
    grad_model = gradient_model(model, provider=provider)
    seed_shape = reference_evaluator(model).run(["y0"], feeds)[0].shape
    feeds = {**feeds, SEED_INPUT: np.random.default_rng(0).standard_normal(seed_shape)
             .astype(np.float32)}
    got = run_on_onnxruntime(grad_model, feeds)
    want = reference_evaluator(grad_model).run(list(got), feeds)
    for (name, a), b in zip(got.items(), want, strict=True):
        scale = max(float(np.abs(b).max(initial=0.0)), 1e-12)
        assert float(np.abs(a - b).max(initial=0.0)) / scale < FLOAT32_TOL, name


def assert_linear_vjp_on_onnxruntime(
    op_type: str, inputs: list[tuple[str, Any]], *, opset: int = 17, tol: float = 1e-5,
    dims: dict[str, list[int | str]] | None = None, **attrs: Any,
) -> None:
    """For an op affine in its first input: ⟨u, VJP(v)⟩ = ⟨f(u) - f(0), v⟩ with onnxruntime's
    own float32 forward, so edge conventions are checked against onnxruntime rather than the
    reference evaluator (which the float64 test uses when onnxruntime lacks a double kernel).
    ``dims``: inputs whose dims become symbolic (see ``with_symbolic_dims``)."""
    model, feeds = single_node_model(op_type, inputs, opset=opset, **attrs)
    if dims is not None:
        model = with_symbolic_dims(model, dims)
    x = inputs[0][0]
    rng = np.random.default_rng(7)
    u = rng.standard_normal(feeds[x].shape).astype(np.float32)
    f_u = run_on_onnxruntime(model, {**feeds, x: u}, ["y0"])["y0"] - run_on_onnxruntime(
        model, {**feeds, x: np.zeros_like(u)}, ["y0"])["y0"]
    v = rng.standard_normal(f_u.shape).astype(np.float32)
    vjp = onnxruntime_gradients(model, feeds, v, wrt=[x])[GRAD_PREFIX + x]
    lhs, rhs = float(np.vdot(u, vjp)), float(np.vdot(f_u, v))
    scale = float(np.abs(u).sum() * np.abs(vjp).max(initial=0.0)) + 1e-12
    assert abs(lhs - rhs) / scale < tol, f"{op_type}: <u, VJP v> = {lhs:.7g}, <f(u), v> = {rhs:.7g}"


def with_symbolic_dims(model: onnx.ModelProto,
                       dims: dict[str, list[int | str]]) -> onnx.ModelProto:
    """A copy of ``model`` whose named graph inputs have the given dims (strings become
    symbolic), with shapes inferred afresh."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        if value.name in dims:
            shape = value.type.tensor_type.shape
            for dim, new in zip(shape.dim, dims[value.name], strict=True):
                if isinstance(new, str):
                    dim.dim_param = new
                else:
                    dim.dim_value = new
    del copy.graph.value_info[:]
    for value in copy.graph.output:
        value.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(copy)


def grayscale_model(model: onnx.ModelProto, layout: str = "nchw") -> onnx.ModelProto:
    """A copy of an RGB NCHW classifier whose single input takes 1 channel (NCHW or NHWC),
    copied into the three channels the original reads: the same scores for a gray image."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rgb = copy.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in rgb.type.tensor_type.shape.dim]
    batch, _, height, width = dims
    nodes, gray = [], "gray"
    if layout == "nhwc":
        nodes.append(onnx.helper.make_node("Transpose", ["gray"], ["gray_nchw"],
                                           perm=[0, 3, 1, 2]))
        gray = "gray_nchw"
    nodes.append(onnx.helper.make_node("Concat", [gray, gray, gray], [rgb.name], axis=1))
    nodes += copy.graph.node
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    shape = [batch, 1, height, width] if layout == "nchw" else [batch, height, width, 1]
    del copy.graph.input[:]
    copy.graph.input.append(onnx.helper.make_tensor_value_info("gray", onnx.TensorProto.FLOAT,
                                                               shape))
    onnx.checker.check_model(copy)
    return copy


def assert_vjp_symbolic(
    op_type: str,
    inputs: list[tuple[str, Any]],
    dims: dict[str, list[int | str]],
    *,
    outputs: int = 1,
    output: str | None = None,
    opset: int = 17,
    provider: str = "any",
    adjoint_tol: float = ADJOINT_TOL,
    **attrs: Any,
) -> None:
    """``assert_vjp`` on a model whose inputs have symbolic dims (rules take dynamic paths)."""
    model, feeds = single_node_model(op_type, inputs, outputs=outputs, opset=opset, **attrs)
    result = check_vjp(with_symbolic_dims(model, dims), feeds, output=output, provider=provider)
    assert result.adjoint_error < adjoint_tol, (
        f"{op_type}: <u, VJP v> = {result.lhs:.10g} but <JVP u, v> = {result.rhs:.10g}"
    )
    assert result.float32_error < FLOAT32_TOL, (
        f"{op_type}: float32 VJP on onnxruntime differs by {result.float32_error:.3g} (relative)"
    )


def completeness(outputs: dict[str, np.ndarray], x: np.ndarray,
                 scale: np.ndarray | None = None) -> np.ndarray:
    """[N] the contract's completeness error of an augmented model's outputs on ``x``
    (relative to ``scale``, default |score|)."""
    return outputs_completeness_error(outputs, x, scale)
