"""Augmenting for float16: structure, completeness under float16 rounding, the gradient scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from float16_emulation import run_emulated
from helpers import completeness as completeness_error
from helpers import run_on_onnxruntime as run_float32
from onnx import TensorProto, helper, numpy_helper
from torch_models import ResidualCNN, export, images, randomize_batchnorm

import fg_onnx
from fg_onnx.choices import GRAPH_METHODS
from fg_onnx.errors import FgOnnxError, UnsupportedModelError
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.fullgrad.contract import read_facts
from fg_onnx.fullgrad.precision import DEFAULT_GRADIENT_SCALE, check_precision
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import infer_shapes
from fg_onnx.runtime.session import FullGrad

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
HALF_COMPLETENESS_TOL = 3e-3
"""float16 keeps 11 significant bits: sums of rounded terms land within a few 1e-4."""


def feeds_for(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return {model.graph.input[0].name: x, "fg_target": np.full(len(x), -1, np.int64)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    model = ResidualCNN()
    randomize_batchnorm(model)
    folder = tmp_path_factory.mktemp("models")
    return {"folded": export(model, folder / "folded.onnx", fold=True),
            "unfolded": export(model, folder / "unfolded.onnx", fold=False)}


def sample_images(n: int = 4) -> np.ndarray:
    return images(n, (3, 64, 64), seed=3)


def test_the_network_and_backward_pass_run_in_float16_behind_a_float32_interface() -> None:
    model = fg_onnx.augment(SAMPLE, precision="float16")
    assert {v.type.tensor_type.elem_type for v in model.graph.input} == {
        TensorProto.FLOAT, TensorProto.INT64}
    assert {v.type.tensor_type.elem_type for v in model.graph.output} == {
        TensorProto.FLOAT, TensorProto.INT64}
    info = GraphInfo(infer_shapes(model))
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")]
    assert len(heavy) >= 6
    assert all(info.elem_type(name) == TensorProto.FLOAT16
               for node in heavy for name in node.input if name)
    facts = read_facts(model)
    assert facts.precision == "float16"
    assert facts.gradient_scale == DEFAULT_GRADIENT_SCALE


def test_a_computed_bias_does_not_keep_the_network_in_float32() -> None:
    """The tap's float32 total reads the bias: it must read a float32 copy, or the bias's
    class, and the network with it, would stay float32."""
    model = onnx.load(SAMPLE)
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    bias = next(t for t in model.graph.initializer if t.name == conv.input[2])
    model.graph.initializer.remove(bias)
    model.graph.input.append(helper.make_tensor_value_info(bias.name, TensorProto.FLOAT,
                                                           list(bias.dims)))
    half = fg_onnx.augment(model, precision="float16", input="image")
    info = GraphInfo(infer_shapes(half))
    heavy = [n for n in half.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")]
    assert all(info.elem_type(n.output[0]) == TensorProto.FLOAT16 for n in heavy)


@pytest.mark.parametrize("name", ["sample", "folded", "unfolded"])
def test_completeness_and_maps_under_float16_rounding(name: str, residual: dict[str, Path],
                                                      ) -> None:
    path, x = (SAMPLE, sample_images()) if name == "sample" else (residual[name], images(4))
    want = run_float32(fg_onnx.augment(path), feeds_for(onnx.load(path), x))
    half = fg_onnx.augment(path, precision="float16")
    got = run_emulated(half, feeds_for(half, x))
    assert completeness_error(got, x).max() < HALF_COMPLETENESS_TOL
    assert completeness_error(want, x).max() < 1e-5
    assert cosine(got["fg_saliency"], want["fg_saliency"]) > 0.999
    assert cosine(got["fg_input_grad"], want["fg_input_grad"]) > 0.99
    np.testing.assert_allclose(got["fg_score"], want["fg_score"], rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("method", GRAPH_METHODS)
def test_every_method_gives_the_float32_map_and_unscaled_outputs(method: str) -> None:
    x = sample_images()
    options = AugmentOptions(method=method, components=True)
    want = run_float32(fg_onnx.augment_with_report(SAMPLE, options).model,
                       feeds_for(onnx.load(SAMPLE), x))
    half = fg_onnx.augment_with_report(
        SAMPLE, AugmentOptions(method=method, components=True, precision="float16")).model
    got = run_emulated(half, feeds_for(half, x))
    assert cosine(got["fg_saliency"], want["fg_saliency"]) > 0.995
    # unscaled: the same magnitudes as float32, not DEFAULT_GRADIENT_SCALE times them
    for name in ["fg_input_grad", "fg_bias_total", *(k for k in want if k.startswith("fg_tap_"))]:
        ratio = np.linalg.norm(got[name]) / np.linalg.norm(want[name])
        assert ratio == pytest.approx(1, abs=0.02), name


def scaled_logits(factor: float) -> onnx.ModelProto:
    """The sample model with its logits times ``factor``, and its gradients with them."""
    model = onnx.load(SAMPLE)
    logits = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Mul", [logits, "factor"], ["small_logits"]))
    model.graph.initializer.append(numpy_helper.from_array(np.float32(factor), "factor"))
    model.graph.output[0].name = "small_logits"
    return model


def test_the_gradient_scale_keeps_small_gradients_out_of_underflow() -> None:
    model, x = scaled_logits(1e-4), sample_images()
    errors = {}
    for scale in (1.0, DEFAULT_GRADIENT_SCALE):
        half = fg_onnx.augment(model, precision="float16", gradient_scale=scale)
        errors[scale] = completeness_error(run_emulated(half, feeds_for(half, x)), x)
    assert errors[DEFAULT_GRADIENT_SCALE].max() < HALF_COMPLETENESS_TOL
    assert errors[1.0].mean() > 10 * errors[DEFAULT_GRADIENT_SCALE].mean()


def test_sums_of_large_gradients_do_not_overflow() -> None:
    """Gradients 100 times the sample's stay below float16's maximum, their sums over a layer
    (the bias gradients) do not: they are summed as float32 means."""
    model, x = scaled_logits(100), sample_images()
    half = fg_onnx.augment(model, precision="float16")
    got = run_emulated(half, feeds_for(half, x))
    assert completeness_error(got, x).max() < HALF_COMPLETENESS_TOL
    want = run_float32(fg_onnx.augment(model), feeds_for(model, x))
    assert cosine(got["fg_saliency"], want["fg_saliency"]) > 0.999


def test_seed_input_in_float16() -> None:
    x = sample_images(2)
    half = fg_onnx.augment(SAMPLE, precision="float16", seed_input=True)
    seed = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    got = run_emulated(half, {half.graph.input[0].name: x, "fg_grad_output": seed})
    logits = run_float32(onnx.load(SAMPLE), {"image": x})["logits"]
    np.testing.assert_allclose(got["fg_score"], (seed * logits).sum(1), rtol=1e-2, atol=1e-2)
    # A random functional of the logits may cancel to a score near zero (-0.05 for the first
    # image with today's sample model, whose terms sum to 75 in magnitude): float16 rounds
    # the terms, so the error is measured against their size, as README states it.
    terms = np.abs(x * got["fg_input_grad"]).sum((1, 2, 3)) + np.abs(got["fg_bias_total"])
    assert completeness_error(got, x, terms).max() < HALF_COMPLETENESS_TOL


@pytest.mark.parametrize(("precision", "scale", "message"), [
    ("float64", None, "unknown precision 'float64'; use one of float32, float16"),
    ("float32", 8.0, "--gradient-scale applies to --precision float16 only"),
    ("float16", 0.0, "the gradient scale must be a positive number, got 0.0"),
    ("float16", float("nan"), "the gradient scale must be a positive number, got nan"),
    ("float16", 1e5, "the gradient scale must be at most 65504, float16's largest number, "
                     "got 100000"),
])
def test_bad_precision_settings(precision: str, scale: float | None, message: str) -> None:
    with pytest.raises(FgOnnxError, match=f"^{message.replace('.', '[.]')}$"):
        check_precision(precision, scale)
    with pytest.raises(FgOnnxError, match="^" + message.split(";")[0].split(",")[0]):
        fg_onnx.augment(SAMPLE, precision=precision, gradient_scale=scale)


def test_float16_needs_a_float32_model() -> None:
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="converts float32 models; input 'x' is "
                                                    "FLOAT16"):
        fg_onnx.augment(model, precision="float16")


def test_fullgrad_session_in_float16() -> None:
    x = sample_images()
    session = FullGrad(SAMPLE, device="cpu", options=AugmentOptions(precision="float16"))
    assert session.precision == "float16"
    result = session.explain(x)
    assert np.isfinite(result.saliency).all()
    assert result.completeness_error.max() < HALF_COMPLETENESS_TOL
    float32 = FullGrad(SAMPLE, device="cpu").explain(x)
    assert cosine(result.saliency, float32.saliency) > 0.999


def test_a_float32_augmented_model_cannot_be_explained_in_float16() -> None:
    augmented = fg_onnx.augment(SAMPLE)
    with pytest.raises(FgOnnxError, match="augmented in float32, not float16; pass the "
                                          "original model"):
        FullGrad(augmented, device="cpu", options=AugmentOptions(precision="float16"))
    assert FullGrad(fg_onnx.augment(SAMPLE, precision="float16"), device="cpu",
                    options=AugmentOptions()).precision == "float16"
