"""What is explained: logits behind wrapped probability heads, [N, C, 1, 1] logits, inner
tensors named with ``output`` (fg_onnx/fullgrad/explained.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import completeness, run_on_onnxruntime
from onnx import TensorProto, helper, numpy_helper

import fg_onnx
from fg_onnx.errors import UnsupportedModelError
from fg_onnx.fullgrad.contract import SCORE, TARGET, TARGET_USED
from fg_onnx.runtime.session import FullGrad

RNG = np.random.default_rng(3)
CLASSES = 5


def _weights() -> dict[str, np.ndarray]:
    shapes = {"w1": (6, 3, 3, 3), "b1": (6,), "w2": (CLASSES, 6, 1, 1), "b2": (CLASSES,),
              "wg": (CLASSES, 6), "bg": (CLASSES,)}
    return {name: (RNG.standard_normal(shape) * 0.5).astype(np.float32)
            for name, shape in shapes.items()}


def _model(nodes: list[onnx.NodeProto], output: str, shape: list[int | str],
           opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]), *nodes],
        "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(v, k) for k, v in _weights().items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def softmax_opset11() -> onnx.ModelProto:
    """A zoo classifier: [N, C, 1, 1] logits and an opset-11 Softmax over axis 1, which the
    upgrade to opset 13+ wraps in Flatten and Reshape (its axis is no longer the last)."""
    return _model([helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
                   helper.make_node("GlobalAveragePool", ["c2"], ["logits"]),
                   helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
                  "probs", ["N", CLASSES, 1, 1], opset=11)


def conv_logits() -> onnx.ModelProto:
    """[N, C, 1, 1] logits from a final 1x1 convolution and a global pool (Caffe2 zoo)."""
    return _model([helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
                   helper.make_node("GlobalAveragePool", ["c2"], ["logits"])],
                  "logits", ["N", CLASSES, 1, 1], opset=13)


def _x(n: int = 3) -> np.ndarray:
    return RNG.standard_normal((n, 3, 8, 8)).astype(np.float32)


def _logits(model: onnx.ModelProto, name: str, x: np.ndarray) -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return run_on_onnxruntime(probe, {"x": x}, [name])[name].reshape(len(x), -1)


def test_a_softmax_wrapped_by_the_opset_upgrade_is_skipped() -> None:
    model = softmax_opset11()
    report = fg_onnx.augment_with_report(model)
    assert report.explained.skipped_op == "Softmax"
    assert report.explained.skipped_through  # the Reshape (and Identity) the upgrade adds
    assert "skipped through Reshape" in report.summary()
    x = _x()
    out = run_on_onnxruntime(report.model, {"x": x, TARGET: np.array([-1, 2, 4])})
    logits = _logits(model, "logits", x)
    np.testing.assert_allclose(out[SCORE], logits[np.arange(3), out[TARGET_USED]], rtol=1e-5)
    assert out[TARGET_USED][0] == logits[0].argmax()
    assert completeness(out, x).max() < 1e-5
    probabilities = fg_onnx.augment_with_report(model, fg_onnx.AugmentOptions(
        explain_probabilities=True))
    assert probabilities.explained.skipped_op is None


def test_logits_with_trailing_unit_axes_are_classes() -> None:
    model = conv_logits()
    x = _x()
    out = run_on_onnxruntime(fg_onnx.augment(model), {"x": x, TARGET: np.array([-1, 3, 0])})
    logits = _logits(model, "logits", x)
    assert out[TARGET_USED].tolist() == [int(logits[0].argmax()), 3, 0]
    np.testing.assert_allclose(out[SCORE], logits[np.arange(3), out[TARGET_USED]], rtol=1e-5)
    assert completeness(out, x).max() < 1e-5
    session = FullGrad(model, device="cpu")
    assert session.classes == CLASSES
    assert session.explain(x, 4).scores == pytest.approx(logits[:, 4], rel=1e-5)


def test_output_may_name_an_inner_tensor() -> None:
    model = softmax_opset11()
    report = fg_onnx.augment_with_report(model, fg_onnx.AugmentOptions(output="logits"))
    assert report.explained.scores == "logits" and report.explained.skipped_op is None
    assert "logits" in report.new_outputs
    x = _x()
    out = run_on_onnxruntime(report.model, {"x": x, TARGET: np.array([1, 1, 1])})
    logits = out["logits"].reshape(3, CLASSES)
    np.testing.assert_allclose(logits, _logits(model, "logits", x), rtol=1e-6)
    np.testing.assert_allclose(out[SCORE], logits[:, 1], rtol=1e-6)
    assert "probs" in out  # the original output stays


@pytest.mark.parametrize(("name", "message"), [
    ("nowhere", "no tensor named 'nowhere' in the graph"),
    ("shape_of", "is not floating point"),
])
def test_output_names_a_float_tensor_of_the_graph(name: str, message: str) -> None:
    model = softmax_opset11()
    model.graph.node.append(helper.make_node("Shape", ["logits"], ["shape_of"]))
    with pytest.raises(UnsupportedModelError, match=message):
        fg_onnx.augment(model, output=name)


def test_a_transpose_that_reorders_classes_is_not_skipped() -> None:
    # [N, 1, C] -> Softmax -> Transpose(0, 2, 1): the output's order is the logits' order
    # only because the moved axis has size 1; a real reorder stops the walk.
    nodes = [helper.make_node("GlobalAveragePool", ["r1"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "two_by"], ["grid"]),
             helper.make_node("Softmax", ["grid"], ["soft"], axis=-1),
             helper.make_node("Transpose", ["soft"], ["probs"], perm=[0, 2, 1])]
    model = _model(nodes, "probs", ["N", 3, 2], opset=13)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 2, 3]), "two_by"))
    with pytest.raises(UnsupportedModelError, match="expected \\[batch, classes\\]"):
        fg_onnx.augment(model)  # not skipped: the [N, 3, 2] probabilities are explained
