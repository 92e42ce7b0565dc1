"""Shared assertions for the tests (importable as ``helpers`` through pytest's pythonpath)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fg_onnx.grad.check import check_vjp, single_node_model

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
    **attrs: Any,
) -> None:
    """Adjoint test of one node's VJP rule (see ``single_node_model`` for ``inputs``)."""
    model, feeds = single_node_model(op_type, inputs, outputs=outputs, opset=opset, **attrs)
    result = check_vjp(model, feeds, wrt=wrt, output=output)
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
