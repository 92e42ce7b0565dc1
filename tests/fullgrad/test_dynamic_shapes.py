"""One augmented model for every input size: a detector and a segmenter exported with dynamic
H and W are augmented without --input-size and run at two sizes, with torch's gradient,
completeness and the original outputs; at a size also given with --input-size, the maps of
both models agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from helpers import completeness
from helpers import run_on_onnxruntime as run
from torch_models import export_any_size, images, randomize_batchnorm
from torch_task_models import SegmentationLogits, TinyYolo

import fg_onnx

SIZES = [(64, 64), (96, 128)]
GRAD_TOL = 1e-4
COMPLETENESS_TOL = 1e-4
Seed = Callable[[tuple[int, ...]], np.ndarray]


def _class_row(shape: tuple[int, ...]) -> np.ndarray:
    """The seed of Σ over anchors of class 1's score (row 4 + 1 of [N, 4 + C, A])."""
    seed = np.zeros(shape, np.float32)
    seed[:, 5] = 1.0
    return seed


def _class_logits(shape: tuple[int, ...]) -> np.ndarray:
    """The seed of Σ over pixels of class 1's logit ([N, C, H, W])."""
    seed = np.zeros(shape, np.float32)
    seed[:, 1] = 1.0
    return seed


def _yolo(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = TinyYolo().eval()
    randomize_batchnorm(model)
    return model, export_any_size(model, path, {0: "N", 2: "anchors"})


def _segmenter(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=2).eval()
    randomize_batchnorm(model)

    wrapped = SegmentationLogits(model).eval()
    return wrapped, export_any_size(wrapped, path, {0: "N", 2: "H", 3: "W"})


MODELS = {"yolo": (_yolo, _class_row), "lraspp": (_segmenter, _class_logits)}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[torch.nn.Module, Path, Seed]:
    make, seed = MODELS[request.param]
    model, path = make(tmp_path_factory.mktemp(request.param) / "model.onnx")
    return model, path, seed


def _torch_gradient(model: torch.nn.Module, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    image = torch.from_numpy(x).requires_grad_(True)
    (model(image) * torch.from_numpy(seed)).sum().backward()
    assert image.grad is not None
    return image.grad.numpy()


def test_one_model_serves_every_size(exported: tuple[torch.nn.Module, Path, Seed]) -> None:
    model, path, make_seed = exported
    augmented = fg_onnx.augment(path, seed_input=True, implicit_biases=True)
    original = onnx.load(str(path))
    for size in SIZES:
        x = images(2, (3, *size))
        plain = run(original, {"image": x})["out"]
        seed = make_seed(plain.shape)
        out = run(augmented, {"image": x, "fg_grad_output": seed})
        # (last-bit differences: onnxruntime's NCHWc reorders sit elsewhere when the
        # gradient reads the activations, see test_augment)
        np.testing.assert_allclose(out["out"], plain, rtol=1e-6, atol=1e-7)
        assert out["fg_saliency"].shape == (2, *size)
        assert np.isfinite(out["fg_saliency"]).all()
        expected = _torch_gradient(model, x, seed)
        error = np.abs(out["fg_input_grad"] - expected).max() / np.abs(expected).max()
        assert error < GRAD_TOL, f"{size}: gradient differs from torch's by {error:.3g}"
        assert completeness(out, x).max() < COMPLETENESS_TOL


def test_map_equals_the_fixed_size_map(exported: tuple[torch.nn.Module, Path, Seed]) -> None:
    _, path, make_seed = exported
    size = SIZES[1]
    fixed = fg_onnx.augment(path, seed_input=True, input_size=size)
    any_size = fg_onnx.augment(path, seed_input=True)
    x = images(2, (3, *size), seed=3)
    seed = make_seed(run(onnx.load(str(path)), {"image": x})["out"].shape)
    feeds = {"image": x, "fg_grad_output": seed}
    want, got = run(fixed, feeds), run(any_size, feeds)
    for name in ("fg_saliency", "fg_input_grad", "fg_bias_total", "fg_score"):
        scale = np.abs(want[name]).max()
        assert np.abs(got[name] - want[name]).max() <= 1e-5 * scale, name
