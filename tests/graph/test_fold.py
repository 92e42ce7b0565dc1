"""Shape arithmetic folded where the inferred shapes already fix it (fg_onnx/graph/fold.py)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fg_onnx
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import normalize


def _chunk_model() -> onnx.ModelProto:
    """x[:, : C // 2] with the half computed from Shape, as TorchScript exports ``chunk``."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["channels"]),
        helper.make_node("Div", ["channels", "two"], ["half"]),
        helper.make_node("Slice", ["x", "zero", "half", "one"], ["y"]),
    ]
    consts = {"zero": np.array([0]), "one": np.array([1]), "two": np.array([2])}
    graph = helper.make_graph(
        nodes, "chunk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 4, 4])],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(v.astype(np.int64), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_shape_arithmetic_on_fixed_dims_is_folded_and_the_batch_stays_open() -> None:
    model = normalize(_chunk_model())
    assert "Gather" not in [n.op_type for n in model.graph.node]  # the Shape is dead now
    batch, *rest = GraphInfo(model).shape("y") or ()
    assert isinstance(batch, str) and rest == [3, 4, 4]


def test_symbolic_dims_are_not_folded() -> None:
    model = _chunk_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    assert [n.op_type for n in normalize(model).graph.node] == ["Shape", "Gather", "Div",
                                                                  "Slice"]


@pytest.mark.parametrize("opset", [11])
def test_torchscript_shufflenet_is_differentiated(opset: int) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    augmented = fg_onnx.augment(onnx.load_from_string(buffer.getvalue()))
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    targets = np.array([3, 7])
    (grad,) = session.run(["fg_input_grad"], {"x": x.numpy(), "fg_target": targets})
    image = x.clone().requires_grad_(True)
    net(image).gather(1, torch.from_numpy(targets)[:, None]).sum().backward()
    want = image.grad.numpy()
    assert np.abs(grad - want).max() < 1e-4 * np.abs(want).max()
