"""Which symbolic spatial dims are provably equal (the map's terms then share a Resize)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.fullgrad.sizes import canonical, equal_size_dims
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import normalize


def _chain() -> onnx.ModelProto:
    """x -> 3x3 pad 1 -> 3x3 stride 2 -> 1x1 -> SAME 5x5 max pool -> 3x3 unpadded."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, c, k, k)).astype(np.float32),
                                       f"W{i}") for i, (c, k) in enumerate(
        [(3, 3), (4, 3), (4, 1), (4, 3)])]
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["same"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["same", "W1"], ["half"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["half", "W2"], ["pointwise"]),
        helper.make_node("MaxPool", ["pointwise"], ["pooled"], kernel_shape=[5, 5],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["pooled", "W3"], ["valid"]),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("valid", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return normalize(model)


def test_stride_one_windows_that_keep_the_size_share_dims() -> None:
    info = GraphInfo(_chain())
    equal = equal_size_dims(info)

    def spatial(name: str) -> tuple[object, object]:
        shape = info.shape(name)
        assert shape is not None
        return canonical((shape[2], shape[3]), equal)

    assert spatial("same") == ("H", "W")
    assert spatial("half") != ("H", "W")
    assert spatial("pointwise") == spatial("half") == spatial("pooled")
    assert spatial("valid") != spatial("pooled")  # a 3x3 without pads shrinks by 2
