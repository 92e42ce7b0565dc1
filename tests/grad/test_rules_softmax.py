"""Adjoint tests of Softmax and LogSoftmax."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_vjp, assert_vjp_symbolic, randn

RNG = np.random.default_rng(99)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, -2])
def test_softmax(op: str, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    assert_vjp(op, [("x", randn(RNG, 2, 3, 4))], **attrs)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_large_logits_and_opset_18(op: str) -> None:
    # Large logits: the rules reuse y, so nothing overflows.
    assert_vjp(op, [("x", 30.0 * randn(RNG, 3, 5))], opset=18, adjoint_tol=1e-5)
    assert_vjp_symbolic(op, [("x", randn(RNG, 2, 4))], {"x": ["N", 4]}, axis=-1)
