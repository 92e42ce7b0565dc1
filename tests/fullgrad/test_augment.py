"""The augmented model's contract, completeness, and parity with a PyTorch FullGrad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from helpers import completeness as completeness_error
from helpers import run_on_onnxruntime as run
from reference_fullgrad import reference_fullgrad
from torch_models import (
    ConvNeXtBlock,
    ResidualCNN,
    SmoothCNN,
    TinyViT,
    export,
    images,
    randomize_batchnorm,
)

import fg_onnx
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.augment import AugmentOptions

COMPLETENESS_TOL = 1e-4


def run_at(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
           level: ort.GraphOptimizationLevel) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture(scope="module")
def residual_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, nn.Module]]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    plain = ResidualCNN()
    randomize_batchnorm(plain)
    head = ResidualCNN(softmax=True)
    head.load_state_dict(plain.state_dict())
    return {
        "folded": (export(plain, folder / "folded.onnx", fold=True), plain),
        "unfolded": (export(plain, folder / "unfolded.onnx", fold=False), plain),
        "softmax": (export(head, folder / "softmax.onnx", fold=True), plain),
    }


def test_contract_inputs_outputs_and_original_values(residual_models: dict) -> None:
    path, _ = residual_models["folded"]
    original = onnx.load(str(path))
    augmented = fg_onnx.augment(path)
    x = images()
    feeds = {"image": x, "fg_target": np.array([-1, 3])}
    # The same kernels on both sides compute the same bits: the augmented graph keeps the
    # original computation. With every optimisation on, onnxruntime's NCHWc layout pass
    # places its reorders differently when the gradient reads the activations, and on AVX2
    # CPUs (not AVX-512) the outputs then differ in the last bit (3e-8 measured).
    extended = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    np.testing.assert_array_equal(run_at(augmented, feeds, extended)["out"],
                                  run_at(original, {"image": x}, extended)["out"])
    before = run(original, {"image": x})
    after = run(augmented, feeds)
    np.testing.assert_allclose(after["out"], before["out"], rtol=1e-6, atol=1e-7)
    inputs = {i.name: i for i in augmented.graph.input}
    assert inputs["fg_target"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert after["fg_score"].shape == (2,) and after["fg_score"].dtype == np.float32
    assert after["fg_target_used"].dtype == np.int64
    assert after["fg_target_used"].tolist() == [int(before["out"][0].argmax()), 3]
    np.testing.assert_allclose(after["fg_score"],
                               before["out"][[0, 1], after["fg_target_used"]], rtol=1e-6)
    assert after["fg_input_grad"].shape == x.shape
    assert after["fg_bias_total"].shape == (2,)
    assert after["fg_saliency"].shape == (2, 32, 32)
    onnx.checker.check_model(augmented, full_check=True)


@pytest.mark.parametrize("variant", ["folded", "unfolded", "softmax"])
def test_completeness_relu_networks(residual_models: dict, variant: str) -> None:
    path, _ = residual_models[variant]
    x = images(3)
    out = run(fg_onnx.augment(path), {"image": x, "fg_target": np.array([0, -1, 4])})
    assert completeness_error(out, x).max() < COMPLETENESS_TOL


def test_completeness_dynamo_export(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = ResidualCNN().eval()
    randomize_batchnorm(model)
    path = tmp_path / "dynamo.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), str(path), dynamo=True,
                      input_names=["image"], dynamic_shapes={"x": {0: batch}})
    x = images(3)
    out = run(fg_onnx.augment(path), {"image": x, "fg_target": np.array([0, -1, 4])})
    assert completeness_error(out, x).max() < COMPLETENESS_TOL


def test_open_spatial_size_takes_any_size_or_a_fixed_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(ResidualCNN().eval(), (torch.zeros(1, 3, 32, 32),), str(path),
                      dynamo=False, opset_version=17, input_names=["image"],
                      dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}})
    fixed = fg_onnx.augment(path, input_size=(40, 48))
    any_size = fg_onnx.augment(path)
    x = images(2, (3, 40, 48))
    feeds = {"image": x, "fg_target": np.array([1, 2])}
    out = run(fixed, feeds)
    assert out["fg_saliency"].shape == (2, 40, 48)
    assert completeness_error(out, x).max() < COMPLETENESS_TOL
    open_out = run(any_size, feeds)
    for name in ("fg_saliency", "fg_input_grad", "fg_bias_total", "fg_score"):
        np.testing.assert_allclose(open_out[name], out[name], rtol=1e-5, atol=1e-6)
    other = images(2, (3, 24, 36))
    open_out = run(any_size, {"image": other, "fg_target": np.array([1, 2])})
    assert open_out["fg_saliency"].shape == (2, 24, 36)
    assert completeness_error(open_out, other).max() < COMPLETENESS_TOL


def test_softmax_head_explains_logits(residual_models: dict) -> None:
    path, _ = residual_models["softmax"]
    report = fg_onnx.augment_with_report(path)
    assert report.explained.skipped_op == "Softmax"
    assert "logits before its Softmax" in report.summary()
    x = images()
    out = run(report.model, {"image": x, "fg_target": np.array([1, 2])})
    assert np.all(out["fg_score"] != out["out"][[0, 1], [1, 2]])  # logits, not probabilities
    probs = run(fg_onnx.augment(path, explain_probabilities=True),
                {"image": x, "fg_target": np.array([1, 2])})
    np.testing.assert_allclose(probs["fg_score"], out["out"][[0, 1], [1, 2]], rtol=1e-6)


def test_saliency_matches_pytorch_reference(residual_models: dict) -> None:
    path, torch_model = residual_models["unfolded"]
    x = images(2)
    target = np.array([1, 4])
    out = run(fg_onnx.augment(path), {"image": x, "fg_target": target})
    expected = reference_fullgrad(torch_model, x, target)
    error = np.abs(out["fg_saliency"] - expected).max() / np.abs(expected).max()
    assert error < 1e-4


def test_components_and_metadata(residual_models: dict) -> None:
    path, _ = residual_models["unfolded"]
    model = fg_onnx.augment(path, components=True)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["fg_onnx.augment"])
    kinds = sorted(t["kind"] for t in meta["taps"])
    assert kinds == ["batchnorm", "batchnorm", "bias", "bias", "bias", "bias"]
    names = [c["output"] for c in meta["components"]]
    assert len(names) == 5  # every rank-4 tap; the Linear bias is rank 2
    out = run(model, {"image": images(), "fg_target": np.array([0, 1])})
    for component in meta["components"]:
        assert out[component["output"]].ndim == 4


def test_seed_input_explains_any_linear_functional(residual_models: dict) -> None:
    path, _ = residual_models["folded"]
    model = fg_onnx.augment(path, seed_input=True)
    assert "fg_target" not in {i.name for i in model.graph.input}
    x = images()
    seed = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
    out = run(model, {"image": x, "fg_grad_output": seed})
    np.testing.assert_allclose(out["fg_score"], (seed * out["out"]).sum(1), rtol=1e-5)
    assert completeness_error(out, x).max() < COMPLETENESS_TOL


def test_implicit_biases_make_smooth_networks_complete(tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = export(SmoothCNN(), tmp_path / "smooth.onnx")
    x = images(2)
    feeds = {"image": x, "fg_target": np.array([0, 2])}
    report = fg_onnx.augment_with_report(path)
    assert "non-homogeneous" in report.summary()
    plain_error = completeness_error(run(report.model, feeds), x).max()
    implicit = run(fg_onnx.augment(path, implicit_biases=True), feeds)
    assert completeness_error(implicit, x).max() < COMPLETENESS_TOL
    assert plain_error > 10 * COMPLETENESS_TOL


@pytest.mark.parametrize("factory", [TinyViT, ConvNeXtBlock], ids=["vit", "convnext"])
def test_implicit_biases_on_transformer_and_convnext(tmp_path: Path, factory: type) -> None:
    torch.manual_seed(2)
    path = export(factory(), tmp_path / "model.onnx")
    x = images(3)
    model = fg_onnx.augment(path, implicit_biases=True)
    out = run(model, {"image": x, "fg_target": np.array([0, 1, 2])})
    assert completeness_error(out, x).max() < COMPLETENESS_TOL
    assert np.all(np.isfinite(out["fg_saliency"]))


def nhwc_model() -> onnx.ModelProto:
    """A tf2onnx-shaped model: NHWC input, Transpose, Conv, Relu, pooling, MatMul + Add."""
    rng = np.random.default_rng(5)
    h = onnx.helper
    weights = {
        "W": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
        "B": rng.standard_normal(6).astype(np.float32),
        "D": rng.standard_normal((6, 4)).astype(np.float32),
        "C": rng.standard_normal(4).astype(np.float32),
        "mean": np.array([0.4, 0.5, 0.6], dtype=np.float32),
    }
    nodes = [
        h.make_node("Sub", ["image", "mean"], ["centred"]),
        h.make_node("Transpose", ["centred"], ["nchw"], perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["nchw", "W", "B"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["conv"], ["act"]),
        h.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        h.make_node("Flatten", ["pooled"], ["flat"]),
        h.make_node("MatMul", ["flat", "D"], ["mm"]),
        h.make_node("Add", ["mm", "C"], ["logits"]),
        h.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = h.make_graph(
        nodes, "nhwc",
        [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 16, 16, 3])],
        [h.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", 4])],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_nhwc_input() -> None:
    report = fg_onnx.augment_with_report(nhwc_model())
    assert report.explained.layout == "nhwc"
    assert sorted(t.kind for t in report.taps) == ["bias", "constant", "constant"]
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    out = run(report.model, {"image": x, "fg_target": np.array([-1, -1])})
    assert out["fg_saliency"].shape == (2, 16, 16)
    assert completeness_error(out, x).max() < COMPLETENESS_TOL


def test_a_layout_the_graph_contradicts_is_refused(residual_models: dict) -> None:
    # Taken as given, NHWC read as NCHW made a [N, 16, 3] "map" summed over an image axis.
    with pytest.raises(FgOnnxError, match="--layout nchw contradicts the graph: input 'image' "
                                          "feeds a Transpose to NCHW, so it is NHWC"):
        fg_onnx.augment(nhwc_model(), layout="nchw")
    assert fg_onnx.augment_with_report(nhwc_model(), AugmentOptions(layout="nhwc")).taps
    path, _ = residual_models["folded"]
    with pytest.raises(FgOnnxError, match="feeds a Conv, so it is NCHW"):
        fg_onnx.augment(path, layout="nhwc")


def test_bad_choices_are_clear_errors(residual_models: dict) -> None:
    path, _ = residual_models["folded"]
    with pytest.raises(FgOnnxError, match="no tensor named 'nope' in the graph"):
        fg_onnx.augment(path, output="nope")
    with pytest.raises(FgOnnxError, match="no graph input named 'nope'"):
        fg_onnx.augment(path, input="nope")
