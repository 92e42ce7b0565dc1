"""Every saliency method on the sample model, and checks against known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import with_symbolic_dims
from onnx import TensorProto, helper, numpy_helper

import fg_onnx
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad import contract
from fg_onnx.methods import METHOD_NAMES, METHODS, Explainer, MethodParams
from fg_onnx.runtime.session import FullGrad

SAMPLE = Path(__file__).parents[2] / "sample_models" / "shapes_cnn.onnx"
FAST = MethodParams(samples=2, steps=4)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_gives_a_finite_map(method: str, batch: np.ndarray) -> None:
    result = Explainer(SAMPLE, method, params=FAST, device="cpu").explain(batch, [1, 2])
    assert result.saliency.shape == (2, 64, 64)
    assert np.all(np.isfinite(result.saliency))
    assert np.all(result.saliency.reshape(2, -1).max(1) > 0)
    assert result.targets.tolist() == [1, 2]
    # A map that is no complete decomposition reports no completeness error at all.
    assert (result.completeness_error is None) == (METHODS[method].completeness is None)
    if result.completeness_error is not None:
        assert result.completeness_error.shape == (2,)


@pytest.mark.parametrize("method", ["gradient", "gradient-x-input"])
def test_gradient_maps_come_from_the_input_gradient(method: str, batch: np.ndarray) -> None:
    explainer = Explainer(SAMPLE, method, device="cpu")
    result = explainer.explain(batch)
    grad = explainer.session.outputs(batch, result.targets, [contract.INPUT_GRAD])
    values = grad[contract.INPUT_GRAD] * (batch if method == "gradient-x-input" else 1.0)
    np.testing.assert_allclose(result.saliency, np.abs(values).sum(1), rtol=1e-5, atol=1e-8)


def test_integrated_gradients_completeness(batch: np.ndarray) -> None:
    coarse = Explainer(SAMPLE, "integrated-gradients", params=MethodParams(steps=4),
                       device="cpu", batch_size=64).explain(batch)
    fine = Explainer(SAMPLE, "integrated-gradients", params=MethodParams(steps=128),
                     device="cpu", batch_size=64).explain(batch)
    assert fine.completeness_error.max() < 1e-2
    assert fine.completeness_error.mean() < coarse.completeness_error.mean()


@pytest.mark.parametrize("method", ["smoothgrad", "smooth-fullgrad", "integrated-gradients"])
def test_methods_that_run_many_copies_work_on_a_fixed_batch_model(method: str,
                                                                   batch: np.ndarray) -> None:
    """All copies run as one large batch; a model fixed to 3 rows gets them 3 at a time."""
    fixed = with_symbolic_dims(onnx.load(str(SAMPLE)), {"image": [3, 3, 64, 64]})
    params = MethodParams(samples=5, steps=5)
    result = Explainer(fixed, method, params=params, device="cpu").explain(batch, [1, 2])
    reference = Explainer(SAMPLE, method, params=params, device="cpu").explain(batch, [1, 2])
    np.testing.assert_allclose(result.saliency, reference.saliency, rtol=1e-4, atol=1e-6)
    if METHODS[method].completeness is None:
        assert result.completeness_error is None and reference.completeness_error is None
    else:
        np.testing.assert_allclose(result.completeness_error, reference.completeness_error,
                                   rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(("smooth", "plain"), [("smoothgrad", "gradient"),
                                               ("smooth-fullgrad", "fullgrad")])
def test_smoothing_without_noise_is_the_plain_map(smooth: str, plain: str,
                                                  batch: np.ndarray) -> None:
    noiseless = MethodParams(samples=3, noise=0.0)
    averaged = Explainer(SAMPLE, smooth, params=noiseless, device="cpu").explain(batch)
    single = Explainer(SAMPLE, plain, device="cpu").explain(batch)
    np.testing.assert_allclose(averaged.saliency, single.saliency, rtol=1e-4, atol=1e-6)
    noisy = Explainer(SAMPLE, smooth, params=MethodParams(samples=3), device="cpu")
    assert not np.allclose(noisy.explain(batch).saliency, single.saliency, rtol=1e-2)


def linear_cam_model(conv_bias: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
    """x [N,2,8,8] -> Conv(3x3, stride 2) -> Relu (A: [N,4,4,4]) -> GAP -> Gemm -> logits."""
    rng = np.random.default_rng(7)
    head = rng.standard_normal((4, 3)).astype(np.float32)
    weights = {
        "W": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "B": conv_bias.astype(np.float32),
        "D": head, "C": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["A"]),
        helper.make_node("GlobalAveragePool", ["A"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "D", "C"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "cam", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model, head


def resize_align_corners(maps: np.ndarray, size: int) -> np.ndarray:
    """Bilinear [N, h, h] -> [N, size, size] with aligned corners."""
    h = maps.shape[1]
    pos = np.linspace(0, h - 1, size)
    low = np.minimum(np.floor(pos).astype(int), h - 2)
    frac = pos - low
    rows = maps[:, low] * (1 - frac)[None, :, None] + maps[:, low + 1] * frac[None, :, None]
    return rows[:, :, low] * (1 - frac) + rows[:, :, low + 1] * frac


@pytest.mark.parametrize("method", ["grad-cam", "grad-cam++"])
def test_grad_cam_matches_numpy_on_a_linear_head(method: str) -> None:
    model, head = linear_cam_model(np.random.default_rng(1).standard_normal(4))
    report = fg_onnx.augment_with_report(model, fg_onnx.AugmentOptions(method=method))
    assert report.cam_layer == "A"  # the Conv's rectified output
    x = np.random.default_rng(2).standard_normal((3, 2, 8, 8)).astype(np.float32)
    target = np.array([0, 2, 1])
    session = ort.InferenceSession(report.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    inter = helper.make_model(model.graph, opset_imports=model.opset_import, ir_version=9)
    inter.graph.output.append(helper.make_tensor_value_info("A", TensorProto.FLOAT, None))
    activation = ort.InferenceSession(inter.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(["A"], {"x": x})[0]
    saliency = session.run([contract.SALIENCY], {"x": x, "fg_target": target})[0]
    # score = Σ_c D[c, t] · mean_ij A_cij + C_t, so ∂score/∂A_cij = D[c, t] / (h·w)
    grads = np.broadcast_to(head[:, target].T[:, :, None, None] / 16, activation.shape)
    if method == "grad-cam":
        weights = grads.mean((2, 3))
    else:
        alpha = grads**2 / (2 * grads**2 + activation.sum((2, 3), keepdims=True) * grads**3
                            + 1e-7)
        weights = (alpha * np.maximum(grads, 0)).sum((2, 3))
    cam = np.maximum((weights[:, :, None, None] * activation).sum(1), 0)
    np.testing.assert_allclose(saliency, resize_align_corners(cam, 8), rtol=1e-4, atol=1e-6)


def test_cam_layer_option_and_errors() -> None:
    model, _ = linear_cam_model(np.zeros(4))
    report = fg_onnx.augment_with_report(
        model, fg_onnx.AugmentOptions(method="grad-cam", cam_layer="conv"))
    facts = contract.read_facts(report.model)
    assert facts.method == "grad-cam" and facts.cam_layer == "conv"
    assert "fg_saliency holds: grad-cam at conv" in report.summary()
    with pytest.raises(FgOnnxError, match="rank 2"):
        fg_onnx.augment_with_report(
            model, fg_onnx.AugmentOptions(method="grad-cam", cam_layer="flat"))
    with pytest.raises(FgOnnxError, match="applies to grad-cam"):
        fg_onnx.augment_with_report(model, fg_onnx.AugmentOptions(cam_layer="conv"))
    with pytest.raises(FgOnnxError, match="fg-onnx explain --method"):
        fg_onnx.augment_with_report(model, fg_onnx.AugmentOptions(method="smoothgrad"))


def test_simple_fullgrad_drops_the_bias_factor() -> None:
    """With unit conv biases the two maps agree; with others they differ."""
    x = np.random.default_rng(3).standard_normal((2, 2, 8, 8)).astype(np.float32)
    feeds = {"x": x, "fg_target": np.array([0, 1])}
    maps = {}
    for bias in ("ones", "random"):
        values = np.ones(4) if bias == "ones" else np.array([0.1, -3.0, 0.5, 2.0])
        model, _ = linear_cam_model(values)
        for method in ("fullgrad", "simple-fullgrad"):
            augmented = fg_onnx.augment_with_report(
                model, fg_onnx.AugmentOptions(method=method)).model
            session = ort.InferenceSession(augmented.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            maps[bias, method] = session.run([contract.SALIENCY], feeds)[0]
    np.testing.assert_allclose(maps["ones", "simple-fullgrad"], maps["ones", "fullgrad"],
                               rtol=1e-5)
    assert not np.allclose(maps["random", "simple-fullgrad"], maps["random", "fullgrad"],
                           rtol=1e-2)


def test_augmented_model_must_hold_the_methods_map(tmp_path: Path) -> None:
    path = tmp_path / "cam.onnx"
    path.write_bytes(fg_onnx.augment_with_report(
        SAMPLE, fg_onnx.AugmentOptions(method="grad-cam")).model.SerializeToString())
    assert Explainer(path, "grad-cam", device="cpu").session.method == "grad-cam"
    with pytest.raises(FgOnnxError, match="augmented for grad-cam"):
        Explainer(path, "fullgrad", device="cpu")


def test_bad_parameters_are_clear_errors() -> None:
    with pytest.raises(FgOnnxError, match="unknown method 'nope'"):
        Explainer(SAMPLE, "nope")
    with pytest.raises(FgOnnxError, match="--samples"):
        MethodParams(samples=0)
    with pytest.raises(FgOnnxError, match="--noise"):
        MethodParams(noise=-1.0)


@pytest.mark.parametrize(("method", "limit"), [("smoothgrad", "fg_onnx.methods.smooth"),
                                               ("integrated-gradients",
                                                "fg_onnx.methods.integrated")])
def test_copies_beyond_the_memory_limit_run_in_pieces_with_the_same_result(
        method: str, limit: str, batch: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every copy of an image used to be made at once: --samples 100000 took tens of GB."""
    params = MethodParams(samples=7, steps=7)
    whole = Explainer(SAMPLE, method, params=params, device="cpu").explain(batch, [1, 2])
    name = "COPIES_PER_CHUNK" if method == "smoothgrad" else "STEPS_PER_CHUNK"
    monkeypatch.setattr(f"{limit}.{name}", 3)  # pieces of 3, 3 and 1 copies per image
    rows: list[int] = []
    for run in ("explain", "outputs"):
        original = getattr(FullGrad, run)

        def recording(self: FullGrad, images: np.ndarray, *args: object,
                      _original: Any = original) -> Any:
            rows.append(len(images))
            return _original(self, images, *args)

        monkeypatch.setattr(FullGrad, run, recording)
    pieces = Explainer(SAMPLE, method, params=params, device="cpu").explain(batch, [1, 2])
    assert max(rows) == 3
    np.testing.assert_allclose(pieces.saliency, whole.saliency, rtol=1e-5, atol=1e-7)
