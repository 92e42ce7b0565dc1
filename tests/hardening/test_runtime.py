"""Runtime: NaN/Inf reported per image, and CUDA that cannot be used."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.evaluation import PerturbationConfig, evaluate
from fg_onnx.runtime import providers
from fg_onnx.runtime.providers import CPU, CUDA
from fg_onnx.runtime.session import FullGrad
from hardening.support import IMAGES, SAMPLE, assert_clean_failure, run_cli, save, tiny_cnn


def test_nan_input_is_confined_to_its_image() -> None:
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    batch[1, 0, 5, 5] = np.nan
    result = FullGrad(SAMPLE, device="cpu").explain(batch)
    finite = [bool(np.all(np.isfinite(m))) for m in result.saliency]
    assert finite == [True, False, True]


def _inf_for_black_images() -> onnx.ModelProto:
    """tiny_cnn's logits divided by the image mean: Inf/NaN for an all-black input."""
    model = tiny_cnn()
    graph = model.graph
    graph.node[-1].output[0] = "logits"
    graph.node.extend([
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one"], ["mean2"]),
        helper.make_node("Div", ["logits", "mean2"], ["y"], name="div"),
    ])
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]))
    return model


def _black_and_grey_images(tmp_path: Path) -> Path:
    """A folder with black.png (Inf/NaN for _inf_for_black_images) and grey.png."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "black.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(folder / "grey.png"), np.full((8, 8, 3), 128, np.uint8))
    return folder


def test_inf_results_are_reported_per_image(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    model = save(_inf_for_black_images(), tmp_path / "div.onnx")
    folder = _black_and_grey_images(tmp_path)
    code, out, err = run_cli(["explain", model, folder, "-o", tmp_path / "out",
                              "--preset", "zero-one", "--device", "cpu"], capsys)
    assert code == 1 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("fg-onnx: warning:")]
    assert len(warnings) == 1 and "black.png" in warnings[0] and "NaN/Inf" in warnings[0]
    assert "1 with NaN/Inf" in out
    text = (tmp_path / "out" / "summary.json").read_text()
    rows = {Path(r["file"]).name: r for r in json.loads(text)}  # strict JSON: no NaN literal
    assert "NaN" not in text and "Infinity" not in text
    assert rows["black.png"]["finite"] is False and rows["grey.png"]["finite"] is True
    assert rows["grey.png"]["score"] is not None
    assert np.isfinite(np.load(tmp_path / "out" / "grey_fullgrad.npy")).all()


def test_overflowing_results_are_reported_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Gradients of ±3e38 times a white image: the completeness sums overflow to ±Inf and
    NaN, which the per-image line reports; numpy must not warn about it as well."""
    weights = np.full((192, 3), 3e38, np.float32)
    weights[96:] *= -1
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])],
        "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = save(model, tmp_path / "huge.onnx")
    cv2.imwrite(str(tmp_path / "white.png"), np.full((8, 8, 3), 255, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code, _, err = run_cli(["explain", path, tmp_path / "white.png", "-o", tmp_path / "out",
                                "--preset", "zero-one", "--layout", "nchw", "--device", "cpu"],
                               capsys)
    assert code == 1, err
    assert [line for line in err.splitlines() if "NaN" in line or "Warning" in line] == [
        f"fg-onnx: warning: {tmp_path / 'white.png'}: NaN/Inf in the score and the map and the "
        "completeness error (finite: false in the summary)"]


class _LostCuda(ort.InferenceSession):  # type: ignore[misc]
    """What onnxruntime does when the CUDA provider fails to load: it quietly runs on CPU."""

    def __init__(self, model: Any, options: Any = None, providers: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(model, options, providers=[CPU])


@pytest.fixture
def broken_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers, "_preload_cuda_libraries", lambda: None)
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(ort, "InferenceSession", _LostCuda)


@pytest.mark.usefixtures("broken_cuda")
def test_unusable_cuda_falls_back_to_cpu_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = IMAGES / "circle.png"
    code, _, err = run_cli(["explain", SAMPLE, image, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    assert f"running on {CPU} (CUDA provider is installed but failed to load" in err
    assert_clean_failure(["explain", SAMPLE, image, "-o", tmp_path / "b", "--device", "cuda"],
                         capsys, "--device cuda: the CUDA provider failed to load")
    assert not (tmp_path / "b").exists()


def test_cuda_forced_without_a_cuda_build(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert_clean_failure(["explain", SAMPLE, IMAGES / "circle.png", "-o", tmp_path / "o",
                          "--device", "cuda"], capsys, "no CUDA provider")


def test_model_onnxruntime_cannot_run_is_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = save(tiny_cnn(TensorProto.DOUBLE), tmp_path / "double.onnx")  # no CPU Conv(double)
    assert_clean_failure(["explain", model, IMAGES / "circle.png", "-o", tmp_path / "o",
                          "--size", "8x8", "--device", "cpu"], capsys,
                         "onnxruntime could not load the model")


def test_evaluate_refuses_images_with_nan_scores(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model = save(_inf_for_black_images(), tmp_path / "div.onnx")
    folder = _black_and_grey_images(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning may leak either
        code, _, err = run_cli(["evaluate", model, folder, "-o", tmp_path / "out", "--preset",
                                "zero-one", "--device", "cpu", "--methods", "gradient"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "fg-onnx: error: the model's predicted scores are NaN or Inf for 1 of 2 image(s)")


def test_evaluate_accepts_a_class_masked_with_minus_infinity() -> None:
    # Only the predicted class is compared; the masked class is never predicted.
    model = tiny_cnn()
    model.graph.node[-1].output[0] = "logits"
    model.graph.node.append(helper.make_node("Add", ["logits", "mask"], ["y"]))
    model.graph.initializer.append(numpy_helper.from_array(
        np.array([0, 0, -np.inf], np.float32), "mask"))
    batch = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    result = evaluate(model, batch, ["gradient"], device="cpu",
                      config=PerturbationConfig(ks=(10.0,), deletion_steps=2))
    assert all(np.isfinite(r.perturbation).all() for r in result.results)
