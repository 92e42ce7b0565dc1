"""Adjoint tests of the shape and selection rules, and of unbroadcast's dynamic path."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_runs_on_onnxruntime,
    assert_vjp,
    assert_vjp_symbolic,
    randn,
    with_symbolic_dims,
)

from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(777)
BIG = np.iinfo(np.int64).max


INT64_MAX = np.iinfo(np.int64).max


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis: int) -> None:
    assert_vjp("Flatten", [("x", r(2, 3, 4))], axis=axis)


def test_reshape_squeeze_unsqueeze() -> None:
    assert_vjp("Reshape", [("x", r(2, 3, 4)), ("w:s", ints(0, -1))])
    assert_vjp("Reshape", [("x", r(2, 3, 4)), ("w:s", ints(4, 6))], allowzero=1)
    assert_vjp("Squeeze", [("x", r(2, 1, 4, 1)), ("w:a", ints(-1, 1))])
    assert_vjp("Squeeze", [("x", r(1, 3, 1))])
    assert_vjp("Unsqueeze", [("x", r(2, 3)), ("w:a", ints(0, -1))])


def test_reshapes_with_symbolic_batch() -> None:
    assert_vjp_symbolic("Flatten", [("x", r(3, 2, 4))], {"x": ["N", 2, 4]}, axis=1)
    assert_vjp_symbolic("Reshape", [("x", r(3, 2, 4)), ("w:s", ints(0, 4, 2))],
                        {"x": ["N", 2, 4]})
    assert_vjp_symbolic("Unsqueeze", [("x", r(3, 2)), ("w:a", ints(1,))], {"x": ["N", 2]})


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm: list[int] | None) -> None:
    attrs = {} if perm is None else {"perm": perm}
    assert_vjp("Transpose", [("x", r(2, 3, 4))], **attrs)


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_concat(axis: int) -> None:
    assert_vjp("Concat", [("a", r(2, 3, 4)), ("b", r(2, 3, 4)), ("w:c", r(2, 3, 4))], axis=axis)


def test_concat_uneven_and_symbolic() -> None:
    assert_vjp("Concat", [("a", r(2, 1)), ("b", r(2, 3)), ("c", r(2, 2))], axis=1)
    assert_vjp("Concat", [("a", r(2, 3))], axis=0)
    assert_vjp_symbolic("Concat", [("a", r(2, 3)), ("b", r(4, 3))],
                        {"a": ["N", 3], "b": ["M", 3]}, axis=0)


def test_split() -> None:
    assert_vjp("Split", [("x", r(2, 7)), ("w:s", ints(2, 4, 1))], outputs=3, axis=1)
    assert_vjp("Split", [("x", r(6, 2))], outputs=2)
    assert_vjp("Split", [("x", r(2, 7))], outputs=3, axis=-1, num_outputs=3, opset=18)


@pytest.mark.parametrize("output", ["y0", "y1", "y2"])
def test_split_one_output_used(output: str) -> None:
    # The other outputs carry no cotangent: they must contribute zeros of the right size.
    assert_vjp("Split", [("x", r(3, 7)), ("w:s", ints(3, 1, 3))], outputs=3, axis=1,
               output=output)


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1], [3], [1], None),
        ([-3, 0], [BIG, -1], [2, 0], None),  # negative indices, end past the dim
        ([0, 1], [4, 5], [-1, 1], [2, 3]),  # strided
        ([-1], [-BIG], [2], [-1]),  # reversed
        ([3, 4], [0, 0], [1, 2], [-2, -3]),  # reversed and strided
        ([0, 1, 0], [2, 4, 5], None, None),  # axes omitted
        ([2], [1], [1], None),  # empty
    ],
)
def test_slice(starts: list[int], ends: list[int], axes: list[int] | None,
               steps: list[int] | None) -> None:
    inputs = [("x", r(2, 4, 5)), ("w:starts", ints(*starts)), ("w:ends", ints(*ends))]
    if axes is not None:
        inputs.append(("w:axes", ints(*axes)))
    if steps is not None:
        inputs += [("", None)] if axes is None else []
        inputs.append(("w:steps", ints(*steps)))
    assert_vjp("Slice", inputs)


def test_slice_dynamic() -> None:
    # Starts that are not constants and symbolic dims take the scatter path.
    assert_vjp("Slice", [("x", r(2, 6)), ("starts", ints(1)), ("w:ends", ints(5)),
                         ("w:axes", ints(1))])
    assert_vjp_symbolic("Slice", [("x", r(3, 6)), ("w:starts", ints(1)), ("w:ends", ints(-1)),
                                  ("w:axes", ints(0))], {"x": ["N", 6]})
    assert_runs_on_onnxruntime("Slice", [("x", r(2, 6)), ("w:starts", ints(5)),
                                         ("w:ends", ints(0)), ("w:axes", ints(1)),
                                         ("w:steps", ints(-2))])


@pytest.mark.parametrize(
    ("indices", "axis"),
    [
        (ints(2, 0), 1),
        (np.array(1, dtype=np.int64), 0),  # scalar index
        (ints(3, 1, 3, 3), 1),  # repeated indices accumulate
        (np.array([[0, -1], [-1, 2]], dtype=np.int64), -1),  # 2-D, negative
    ],
)
def test_gather(indices: np.ndarray, axis: int) -> None:
    assert_vjp("Gather", [("x", r(3, 4, 5)), ("w:i", indices)], axis=axis)


def test_gather_dynamic_indices() -> None:
    assert_vjp("Gather", [("x", r(3, 4)), ("i", ints(1, 1, -1))], axis=1)
    assert_runs_on_onnxruntime("Gather", [("x", r(3, 4)), ("i", ints(1, 1, -1))], axis=1)


def test_gather_elements() -> None:
    indices = np.array([[0, 2, 2], [1, 1, 0]], dtype=np.int64)
    assert_vjp("GatherElements", [("x", r(2, 3)), ("w:i", indices)], axis=1)
    assert_vjp("GatherElements", [("x", r(3, 3)), ("w:i", indices)], axis=0)
    assert_runs_on_onnxruntime("GatherElements", [("x", r(2, 3)), ("w:i", indices)], axis=1)


@pytest.mark.parametrize(
    ("pads", "mode"),
    [
        ([0, 1, 2, 0, 2, 1], "constant"),
        ([1, -1, 0, -1, 2, 1], "constant"),  # negative pads crop
        ([0, 2, 1, 0, 1, 2], "reflect"),
        ([1, 2, 0, 0, 3, 1], "edge"),
    ],
)
def test_pad(pads: list[int], mode: str) -> None:
    assert_vjp("Pad", [("x", r(2, 3, 4)), ("w:p", ints(*pads))], mode=mode)


def test_pad_variants() -> None:
    # Axes input (opset 18), wrap mode (opset 19), pads computed at run time, and a padding
    # value that is itself differentiated.
    assert_vjp("Pad", [("x", r(2, 3, 4)), ("w:p", ints(1, 2, 0, 1)), ("", None),
                       ("w:a", ints(-1, 0))], opset=18)
    assert_vjp("Pad", [("x", r(2, 3, 4)), ("w:p", ints(0, 1, 2, 0, 2, 1))], mode="wrap",
               opset=19)
    assert_vjp("Pad", [("x", r(2, 3, 4)), ("p", ints(0, -1, 2, 1, 2, -1))])
    assert_vjp("Pad", [("x", r(2, 3)), ("w:p", ints(1, 0, 0, 2)),
                       ("c", np.array(0.5, dtype=np.float32))])
    assert_vjp("Pad", [("x", r(2, 3)), ("w:p", ints(1, 0, 0, 2)),
                       ("c", np.array([0.5], dtype=np.float32))])  # as some exporters write it
    assert_runs_on_onnxruntime("Pad", [("x", r(2, 3, 4)), ("w:p", ints(0, 2, 1, 0, 1, 2))],
                               mode="reflect")


def test_expand() -> None:
    assert_vjp("Expand", [("x", r(3, 1)), ("w:s", ints(2, 3, 4))])
    assert_vjp("Expand", [("x", r(2, 3)), ("w:s", ints(1, 3))])


def test_tile() -> None:
    assert_vjp("Tile", [("x", r(2, 3)), ("w:rep", ints(2, 3))])
    assert_vjp("Tile", [("x", r(2, 1, 3)), ("w:rep", ints(1, 4, 1))])
    assert_vjp_symbolic("Tile", [("x", r(2, 3)), ("w:rep", ints(3, 2))], {"x": ["N", 3]})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode: str) -> None:
    assert_vjp("DepthToSpace", [("x", r(2, 8, 2, 3))], blocksize=2, mode=mode)
    assert_vjp_symbolic("DepthToSpace", [("x", r(2, 8, 2, 3))], {"x": ["N", 8, "H", "W"]},
                        blocksize=2, mode=mode)


def test_space_to_depth() -> None:
    assert_vjp("SpaceToDepth", [("x", r(2, 3, 4, 6))], blocksize=2)


def test_dynamic_unbroadcast() -> None:
    # Different symbolic dims cannot be compared statically: the sum axes are found at run
    # time (here b's 'M' is 1 and broadcast against 3).
    model, _ = single_node_model("Add", [("a", r(3, 4)), ("b", r(1, 4))])
    symbolic = with_symbolic_dims(model, {"a": ["N", 4], "b": ["M", 4]})
    assert "NonZero" in {n.op_type for n in gradient_model(symbolic).graph.node}
    assert_vjp_symbolic("Add", [("a", r(3, 4)), ("b", r(1, 4))],
                        {"a": ["N", 4], "b": ["M", 4]})
    assert_vjp_symbolic("Mul", [("a", r(2, 3, 4)), ("b", r(3, 1))],
                        {"a": ["N", "C", 4], "b": ["C2", "K"]})
    assert_vjp_symbolic("Expand", [("x", r(1, 4)), ("w:s", ints(3, 1))], {"x": ["M", 4]})


@pytest.mark.parametrize("size", [(4, 6), (5, 3)])
def test_shape_ops_at_run_time_spatial_sizes(size: tuple[int, int]) -> None:
    # The ops a detector's head applies to feature maps of open size.
    x = r(2, 3, *size)
    dims: dict[str, list[int | str]] = {"x": ["N", 3, "H", "W"]}
    assert_vjp_symbolic("Reshape", [("x", x), ("w:s", ints(0, 3, -1))], dims)
    assert_vjp_symbolic("Slice", [("x", x), ("w:starts", ints(1, 0)), ("w:ends", ints(-1, 2)),
                                  ("w:axes", ints(2, 3))], dims)
    assert_vjp_symbolic("Pad", [("x", x), ("w:pads", ints(0, 0, 1, 2, 0, 0, 2, -1))], dims)
    assert_vjp_symbolic("Tile", [("x", x), ("w:rep", ints(1, 2, 1, 3))], dims)
    assert_vjp_symbolic("Transpose", [("x", x)], dims, perm=[0, 2, 3, 1])


@pytest.mark.parametrize("size", [(5, 7), (2, 3)])
def test_unit_step_slice_at_run_time_sizes_pads_back(size: tuple[int, int]) -> None:
    # Constant starts and ends on dims of open size: the pads come from Shape(x), no scatter.
    x = r(2, 3, *size)
    inputs = [("x", x), ("w:starts", ints(1, -3)), ("w:ends", ints(-1, INT64_MAX)),
              ("w:axes", ints(2, -1))]
    dims: dict[str, list[int | str]] = {"x": ["N", 3, "H", "W"]}
    assert_vjp_symbolic("Slice", inputs, dims)
    model, _ = single_node_model("Slice", inputs)
    grad = gradient_model(with_symbolic_dims(model, dims))
    ops = {n.op_type for n in grad.graph.node}
    assert "Pad" in ops and "ScatterElements" not in ops
