"""VJPContext: what a rule may ask about its node."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import VJPContext
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo


def _context(node: onnx.NodeProto, output_shape: list[int]) -> VJPContext:
    value = helper.make_tensor_value_info
    graph = helper.make_graph([node], "one", [value("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [value(node.output[0], TensorProto.FLOAT, output_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = GraphInfo(onnx.shape_inference.infer_shapes(model))
    return VJPContext(node=node, info=info, b=GraphBuilder(info), needs=(True,))


def test_attr_decodes_strings_and_lists_of_strings() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="VALID",
                            name="pool")
    node.attribute.append(helper.make_attribute("tags", ["a", "b"]))
    ctx = _context(node, [1, 1, 3, 3])
    assert ctx.attr("auto_pad") == "VALID"
    assert ctx.attr("tags") == ["a", "b"]
    assert ctx.attr("kernel_shape") == [2, 2]
    assert ctx.attr("strides", [1, 1]) == [1, 1]


def test_cotangent_of_an_output_that_does_not_reach_the_seed_names_the_node() -> None:
    ctx = _context(helper.make_node("Relu", ["x"], ["y"], name="act"), [1, 1, 4, 4])
    assert ctx.cotangent(["g"]) == "g"
    with pytest.raises(GraphBuildError, match=r"Relu node 'act'.*output 0 carries no cotangent"):
        ctx.cotangent([None])
    with pytest.raises(GraphBuildError, match=r"output 1 carries no cotangent"):
        ctx.cotangent(["g"], 1)


def test_forward_output_is_added_once_with_its_type() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], name="pool")
    ctx = _context(node, [1, 1, 3, 3])
    name = ctx.forward_output(1, TensorProto.INT64, (1, 1, 3, 3))
    assert list(node.output) == ["y", name]
    assert ctx.forward_output(1, TensorProto.INT64) == name
    assert ctx.info.elem_type(name) == TensorProto.INT64
    assert ctx.info.shape(name) == (1, 1, 3, 3)
    assert ctx.forward_output(0, TensorProto.FLOAT) == "y"
