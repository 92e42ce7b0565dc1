"""Adjoint tests of the pooling rules, with windows that overlap and run past the edges."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_linear_vjp_on_onnxruntime,
    assert_runs_on_onnxruntime,
    assert_vjp,
    assert_vjp_symbolic,
    randn,
)

from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(2468)


def distinct(*shape: int) -> np.ndarray:
    """Values 0.05 apart in random order: no ties, and finite differences never swap a max."""
    size = int(np.prod(shape))
    return (RNG.permutation(size).reshape(shape) * 0.05 - size * 0.025).astype(np.float32)


MAX_POOL_CASES = [
    ((2, 3, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                    "ceil_mode": 1}),
    ((1, 2, 9, 9), {"kernel_shape": [2, 3], "strides": [2, 1], "dilations": [2, 2],
                    "pads": [1, 1, 0, 1]}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}),
    ((1, 2, 5, 6, 5), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2]}),
]
MAX_POOL_IDS = ["overlap", "ceil", "ceil-pads", "dilated", "same-upper", "same-lower", "1d", "3d"]


@pytest.mark.parametrize(("shape", "attrs"), MAX_POOL_CASES, ids=MAX_POOL_IDS)
def test_max_pool(shape: tuple[int, ...], attrs: dict) -> None:
    x = distinct(*shape)
    assert_vjp("MaxPool", [("x", x)], **attrs)
    assert_runs_on_onnxruntime("MaxPool", [("x", x)], **attrs)


# Windows that never share an input: for the CPU provider the gradient is a MaxUnpool instead
# of a scatter-add (onnxruntime's CUDA provider has no MaxUnpool).
DISJOINT_CASES = [
    ((2, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 7, 9), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 9, 8), {"kernel_shape": [2, 3], "strides": [3, 3], "pads": [1, 0, 0, 1]}),
    ((1, 2, 9, 9), {"kernel_shape": [2, 2], "strides": [3, 3], "dilations": [2, 2]}),
    ((2, 3, 10), {"kernel_shape": [2], "strides": [2]}),
    ((1, 2, 4, 6, 4), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
]
DISJOINT_IDS = ["vgg", "ceil", "gaps-pads", "dilated", "1d", "3d"]


@pytest.mark.parametrize(("shape", "attrs"), DISJOINT_CASES, ids=DISJOINT_IDS)
def test_max_pool_with_disjoint_windows(shape: tuple[int, ...], attrs: dict) -> None:
    x = distinct(*shape)
    assert_vjp("MaxPool", [("x", x)], provider="cpu", **attrs)
    assert_runs_on_onnxruntime("MaxPool", [("x", x)], provider="cpu", **attrs)
    model, _ = single_node_model("MaxPool", [("x", x)], **attrs)
    ops = {n.op_type for n in gradient_model(model, provider="cpu").graph.node}
    assert "MaxUnpool" in ops and "ScatterElements" not in ops
    portable = {n.op_type for n in gradient_model(model).graph.node}
    assert "MaxUnpool" not in portable and "ScatterElements" in portable


def test_max_pool_with_overlapping_windows_adds_up() -> None:
    model, _ = single_node_model("MaxPool", [("x", distinct(1, 2, 7, 7))],
                                 kernel_shape=[3, 3], strides=[2, 2])
    ops = {n.op_type for n in gradient_model(model, provider="cpu").graph.node}
    assert "ScatterElements" in ops and "MaxUnpool" not in ops


def test_max_pool_disjoint_windows_column_major_indices() -> None:
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1}
    assert_vjp("MaxPool", [("x", distinct(1, 2, 6, 4))], outputs=2, provider="cpu", **attrs)


def test_max_pool_with_indices_output() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    assert_vjp("MaxPool", [("x", distinct(1, 2, 6, 6))], outputs=2, **attrs)


def test_max_pool_with_column_major_indices() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "storage_order": 1}
    assert_runs_on_onnxruntime("MaxPool", [("x", distinct(1, 2, 7, 5))], outputs=2, **attrs)
    assert_vjp("MaxPool", [("x", distinct(1, 2, 7, 5))], outputs=2, **attrs)


def test_global_max_pool() -> None:
    x = distinct(2, 3, 4, 5)
    assert_vjp("GlobalMaxPool", [("x", x)])
    assert_runs_on_onnxruntime("GlobalMaxPool", [("x", x)])


def test_global_average_pool() -> None:
    assert_vjp("GlobalAveragePool", [("x", randn(RNG, 2, 3, 4, 5))])
    assert_vjp("GlobalAveragePool", [("x", randn(RNG, 2, 3, 3, 2, 4))])


AVERAGE_POOL_CASES = [
    ((2, 3, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                    "count_include_pad": 1}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                    "ceil_mode": 1}),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                    "ceil_mode": 1, "count_include_pad": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER",
                    "count_include_pad": 1}),
    ((2, 3, 10), {"kernel_shape": [4], "strides": [3], "pads": [2, 1], "ceil_mode": 1}),
    ((1, 2, 5, 6, 5), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1],
                       "pads": [0, 1, 1, 1, 1, 0]}),
]
AVERAGE_POOL_IDS = ["overlap", "pads-exclude", "pads-include", "ceil", "ceil-pads-exclude",
                    "ceil-pads-include", "same-upper", "same-lower-include", "1d", "3d"]


@pytest.mark.parametrize(("shape", "attrs"), AVERAGE_POOL_CASES, ids=AVERAGE_POOL_IDS)
def test_average_pool(shape: tuple[int, ...], attrs: dict) -> None:
    x = randn(RNG, *shape)
    assert_vjp("AveragePool", [("x", x)], **attrs)
    assert_linear_vjp_on_onnxruntime("AveragePool", [("x", x)], **attrs)


def test_average_pool_dilated() -> None:
    attrs = {"kernel_shape": [2, 2], "strides": [2, 1], "dilations": [2, 3],
             "pads": [1, 0, 1, 1], "ceil_mode": 1}
    x = randn(RNG, 1, 2, 8, 9)
    assert_vjp("AveragePool", [("x", x)], opset=19, **attrs)
    assert_linear_vjp_on_onnxruntime("AveragePool", [("x", x)], opset=19, **attrs)


def test_pools_with_symbolic_batch_and_channels() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}
    dims: dict[str, list[int | str]] = {"x": ["N", "C", 7, 6]}
    assert_vjp_symbolic("MaxPool", [("x", distinct(2, 3, 7, 6))], dims, **attrs)
    assert_vjp_symbolic("MaxPool", [("x", distinct(2, 3, 7, 6))], dims, kernel_shape=[2, 2],
                        strides=[2, 2], ceil_mode=1, provider="cpu")  # MaxUnpool
    assert_vjp_symbolic("AveragePool", [("x", randn(RNG, 2, 3, 7, 6))], dims, **attrs)
    assert_vjp_symbolic("GlobalMaxPool", [("x", distinct(2, 3, 4, 5))], {"x": ["N", 3, "H", 5]})
    assert_vjp_symbolic("GlobalAveragePool", [("x", randn(RNG, 2, 3, 4, 5))],
                        {"x": ["N", 3, "H", "W"]})


def test_max_pool_reuses_the_forward_pool() -> None:
    model, _ = single_node_model("MaxPool", [("x", distinct(1, 2, 6, 6))],
                                 kernel_shape=[3, 3], strides=[2, 2])
    grad = gradient_model(model)
    pools = [n for n in grad.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1 and len(pools[0].output) == 2
    assert grad.graph.output[0].name == "y0"


# Grown by 1, the 1-D case's last ceil_mode window starts in the end pad, where onnx's
# reference evaluator (the float64 oracle) and onnxruntime disagree: it grows by 2 instead.
RUN_TIME_SIZE_CASES = [
    pytest.param(shape, attrs, grow + (grow == 1 and name == "1d"), id=f"{name}-{grow}")
    for (shape, attrs), name in zip(AVERAGE_POOL_CASES, AVERAGE_POOL_IDS, strict=True)
    for grow in (0, 1)
]


@pytest.mark.parametrize(("shape", "attrs", "grow"), RUN_TIME_SIZE_CASES)
def test_average_pool_at_run_time_sizes(shape: tuple[int, ...], attrs: dict, grow: int) -> None:
    x = randn(RNG, *shape[:2], *(d + grow for d in shape[2:]))
    dims: dict[str, list[int | str]] = {"x": ["N", shape[1], *(f"S{i}" for i in range(
        len(shape) - 2))]}
    assert_vjp_symbolic("AveragePool", [("x", x)], dims, **attrs)


def test_average_pool_same_stride1_at_run_time_sizes() -> None:
    dims: dict[str, list[int | str]] = {"x": ["N", 2, "H", "W"]}
    assert_vjp_symbolic("AveragePool", [("x", randn(RNG, 1, 2, 7, 8))], dims,
                        kernel_shape=[2, 3], auto_pad="SAME_LOWER", count_include_pad=1)


def test_max_pool_at_run_time_sizes() -> None:
    dims: dict[str, list[int | str]] = {"x": ["N", 3, "H", "W"]}
    for size in ((7, 6), (8, 9)):
        assert_vjp_symbolic("MaxPool", [("x", distinct(2, 3, *size))], dims, kernel_shape=[3, 3],
                            strides=[2, 2], pads=[1, 1, 1, 1])
        assert_vjp_symbolic("MaxPool", [("x", distinct(2, 3, *size))], dims, kernel_shape=[2, 2],
                            strides=[2, 2], ceil_mode=1, provider="cpu")
