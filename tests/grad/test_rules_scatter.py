"""Adjoint tests of GatherND, ScatterND, ScatterElements and CumSum."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_vjp, randn

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(16)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


def ints(values: list[object]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize(("axis", "exclusive", "reverse"),
                         [(0, 0, 0), (1, 0, 1), (-1, 1, 0), (1, 1, 1)])
def test_cumsum(axis: int, exclusive: int, reverse: int) -> None:
    assert_vjp("CumSum", [("x", r(2, 4, 3)), ("w:axis", np.array(axis, np.int64))],
               exclusive=exclusive, reverse=reverse)


def test_gather_nd_with_repeated_and_negative_indices() -> None:
    indices = ints([[0, 1], [1, -1], [0, 1]])  # (0, 1) twice: its cotangents add up
    assert_vjp("GatherND", [("x", r(2, 3, 4)), ("w:i", indices)])


def test_gather_nd_slices_and_batch_dims() -> None:
    assert_vjp("GatherND", [("x", r(3, 4, 2)), ("w:i", ints([[2], [0], [2]]))])
    batched = ints([[[1], [0]], [[2], [2]]])
    assert_vjp("GatherND", [("x", r(2, 3, 4)), ("w:i", batched)], batch_dims=1)


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_nd(reduction: str) -> None:
    indices = ints([[1, 0], [0, 2]])
    inputs = [("data", r(2, 3, 4)), ("w:i", indices), ("updates", r(2, 4))]
    assert_vjp("ScatterND", inputs, reduction=reduction)


def test_scatter_nd_mul_data_gradient() -> None:
    inputs = [("data", r(2, 3)), ("w:i", ints([[1, 2], [0, 0], [1, 2]])), ("w:u", r(3))]
    assert_vjp("ScatterND", inputs, reduction="mul")


@pytest.mark.parametrize(("axis", "reduction"), [(0, "none"), (1, "none"), (-1, "add")])
def test_scatter_elements(axis: int, reduction: str) -> None:
    indices = ints([[2, 0, 1], [1, 2, 0]]) if axis == 0 else ints([[3, 0, 1], [1, 2, 0]])
    inputs = [("data", r(3, 4)), ("w:i", indices), ("updates", r(2, 3))]
    assert_vjp("ScatterElements", inputs, axis=axis, reduction=reduction)


def test_scatter_elements_mul_data_gradient() -> None:
    inputs = [("data", r(3, 4)), ("w:i", ints([[1, 1, 0, 2]])), ("w:u", r(1, 4))]
    assert_vjp("ScatterElements", inputs, axis=0, reduction="mul")


@pytest.mark.parametrize(("reduction", "why"), [("max", "reduction='max'"),
                                                ("mul", "computed updates")])
def test_scatter_refusals_name_the_reason(reduction: str, why: str) -> None:
    model, _ = single_node_model("ScatterElements", [
        ("data", r(3, 4)), ("w:i", ints([[1, 2, 0, 2]])), ("updates", r(1, 4))],
        reduction=reduction)
    with pytest.raises(GraphBuildError, match=why):
        gradient_model(model)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress(axis: int | None) -> None:
    condition = np.array([True, False, True, True])[:3 if axis == 0 else 4]
    attrs = {} if axis is None else {"axis": axis}  # None: the flattened tensor's first 4
    assert_vjp("Compress", [("x", r(3, 4, 4)), ("w:c", condition)], **attrs)


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = r(4, 3, 2) if time_axis == 0 else r(3, 4, 2)
    assert_vjp("ReverseSequence", [("x", x), ("w:lens", ints([4, 1, 3]))],
               batch_axis=batch_axis, time_axis=time_axis)


def test_max_unpool() -> None:
    x = r(2, 3, 2, 2)
    pooled_from = RNG.permutation(16)[:4]  # one flat position per window of a 4x4 map
    per_map = np.stack([pooled_from + 16 * k for k in range(6)]).reshape(2, 3, 2, 2)
    assert_vjp("MaxUnpool", [("x", x), ("w:i", per_map.astype(np.int64)),
                             ("w:s", ints([2, 3, 4, 4]))], kernel_shape=[2, 2], strides=[2, 2])
