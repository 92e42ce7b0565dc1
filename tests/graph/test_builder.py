"""GraphBuilder: Add trees and the dropping of unused additions."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo


def _model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _depth(model: onnx.ModelProto, name: str) -> int:
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(name)
    if node is None or node.op_type != "Add":
        return 0
    return 1 + max(_depth(model, i) for i in node.input)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_add_all_is_a_balanced_tree_of_adds(count: int) -> None:
    model = _model()
    b = GraphBuilder(GraphInfo(model))
    parts = [b.Mul("x", b.const(np.float32(i + 1))) for i in range(count)]
    total = b.add_all(parts)
    b.op_multi("Identity", total, outputs=["total"])
    model.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, None))
    b.apply_to(model)
    assert {n.op_type for n in model.graph.node} <= {"Relu", "Mul", "Add", "Identity"}
    assert _depth(model, total) == int(np.ceil(np.log2(count)))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["total"], {"x": x})[0], x * count * (count + 1) / 2)


def test_add_all_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="at least one"):
        GraphBuilder(GraphInfo(_model())).add_all([])


def test_apply_to_drops_what_no_output_needs() -> None:
    model = _model()
    b = GraphBuilder(GraphInfo(model))
    kept = b.Mul("y", b.const(np.full((2, 3), 2.0, np.float32), hint="kept_weight"))
    unused = b.Exp(b.Add("x", b.const(np.full((2, 3), 3.0, np.float32), hint="dead_weight")))
    b.Neg(unused)
    b.op_multi("Identity", kept, outputs=["doubled"])
    model.graph.output.append(helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [2, 3]))
    b.apply_to(model)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Mul", "Identity"]
    assert [t.name.split("/")[-1].rsplit("_", 1)[0] for t in model.graph.initializer] == [
        "kept_weight"]
    onnx.checker.check_model(model, full_check=True)
