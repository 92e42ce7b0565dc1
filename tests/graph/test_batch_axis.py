"""The batch axis of a tensor, read off the graph: by the input's batch symbol, by shape
inference at trial batches (where symbolic inference loses the symbol), and for a fixed
batch by the axes that follow the input's width."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from fg_onnx.graph.batch_axis import batch_axes
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import normalize


def _column_head(batch: int | str, width: int | str, time_first: bool,
                 reshape: bool = False) -> onnx.ModelProto:
    """[B, 3, 4, W] -> the mean over the height -> [W, B, 3] (time first) or [B, W, 3];
    ``reshape``: then a Reshape to [W, -1, 3], which symbolic inference cannot size."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 4, width])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2], keepdims=0),
             helper.make_node("Transpose", ["mean"], ["out" if not reshape else "t"],
                              perm=[2, 0, 1] if time_first else [0, 2, 1])]
    weights = []
    if reshape:
        nodes.append(helper.make_node("Reshape", ["t", "shape"], ["out"]))
        weights.append(helper.make_tensor("shape", TensorProto.INT64, [3], [5, -1, 3]))
    graph = helper.make_graph(nodes, "head", [image], [out], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _axis(model: onnx.ModelProto) -> int | None:
    normalised = normalize(model)
    return batch_axes(normalised, GraphInfo(normalised), "image", ["out"], 3)["out"]


@pytest.mark.parametrize("time_first", [True, False])
def test_the_batch_symbol_names_the_axis(time_first: bool) -> None:
    assert _axis(_column_head("N", "W", time_first)) == (1 if time_first else 0)


def test_trial_batches_find_the_axis_where_inference_loses_the_symbol() -> None:
    model = normalize(_column_head("N", 5, True, reshape=True))
    shape = GraphInfo(model).shape("out")
    assert shape is not None and shape[1] != "N"  # symbolic inference lost it
    assert _axis(_column_head("N", 5, True, reshape=True)) == 1


@pytest.mark.parametrize("time_first", [True, False])
def test_a_fixed_batch_of_one_is_told_from_the_steps_that_follow_the_width(
        time_first: bool) -> None:
    # [?, 1, 3] or [1, ?, 3]: by size alone the open axis could be 1 as well.
    assert _axis(_column_head(1, "W", time_first)) == (1 if time_first else 0)


def test_a_fixed_batch_among_fixed_sizes_is_the_axis_of_its_size() -> None:
    assert _axis(_column_head(2, 5, True)) == 1
    assert _axis(_column_head(2, 5, False)) == 0


def test_a_batch_of_one_with_one_step_is_not_told() -> None:
    assert _axis(_column_head(1, 1, True)) is None
