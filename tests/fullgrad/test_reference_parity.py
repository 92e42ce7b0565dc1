"""fg-onnx's map beside the authors' FullGrad (tools/reference_fullgrad.py) on torchvision nets.

The reference is evaluated in float64 so that only fg-onnx's float32 rounding is left: a
float32 reference flips, now and then, a ReLU whose pre-activation lies within rounding of zero
(one such flip moved a VGG map by 4e-3 of its maximum), which is noise, not a disagreement.

Where a convolution has a bias of its own and a BatchNorm follows it, an export that folds the
BatchNorm into the convolution merges the two biases into one tap; FullGrad normalises every tap
on its own (ψ), so that map differs from the reference's, and equals the reference's map of the
torch model with the same folding done in torch.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torchvision
import torchvision.models.vgg as vgg
from helpers import run_on_onnxruntime as run
from reference_fullgrad import reference_fullgrad
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch_models import export, randomize_batchnorm

import fg_onnx

SIZE = 32
# Measured on a 2-core x86 CPU: 1.2e-7 to 2.7e-7 (float32 against float64); the bound leaves
# room for other CPUs' rounding, and is far below a real difference (a merged tap: 0.38).
PARITY_TOL = 1e-5
# A full-size net at 224x224 has millions of ReLU and MaxPool inputs: one of them usually sits
# within float32 rounding of its kink, and one flip moves the map by about 1e-3 of its maximum
# (measured: 8e-4 to 4e-3 in one image of sixteen at 64x64, and 8.1e-4 for the folded full
# VGG-11-BN below under ORT_ENABLE_ALL, 3.1e-7 under ORT_ENABLE_EXTENDED).
FULL_SIZE_TOL = 1e-2


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual − expected| / max |expected|."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)


def fg_onnx_map(path: Path, x: np.ndarray) -> np.ndarray:
    feeds = {"image": x, "fg_target": np.full(len(x), -1, dtype=np.int64)}
    saliency: np.ndarray = run(fg_onnx.augment(path), feeds, ["fg_saliency"])["fg_saliency"]
    return saliency


def float64_reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    saliency: np.ndarray = reference_fullgrad(copy.deepcopy(model).double(), x.astype(np.float64))
    return saliency


def give_conv_biases(model: nn.Module, seed: int = 2) -> None:
    """Biases drawn as torch.nn.Conv2d draws them, U(±1/√fan_in): torchvision's VGG init
    zeroes them, pretrained VGG weights have them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            bound = 1 / math.sqrt(module.weight[0].numel())
            module.bias.data.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1)
                                   * bound)


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = torchvision.models.resnet18(weights=None).eval()
    randomize_batchnorm(model, seed=1)
    return model


class SmallHeadVGG(nn.Module):
    """torchvision's VGG-11-BN features (every Conv, BatchNorm, ReLU and MaxPool, initialised
    as torchvision's VGG does) under one Linear. At 32x32 the features are 1x1, which the
    TorchScript exporter cannot pool adaptively to the 7x7 that VGG's classifier takes, and
    that classifier alone (25088x4096) takes seconds to initialise; the slow test runs the
    whole net."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = vgg.make_layers(vgg.cfgs["A"], batch_norm=True)
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                assert module.bias is not None
                nn.init.zeros_(module.bias)
        self.classifier = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).mean((2, 3)))
        return logits


def small_head_vgg11_bn(conv_biases: bool) -> nn.Module:
    torch.manual_seed(0)
    model = SmallHeadVGG().eval()
    randomize_batchnorm(model, seed=1)
    if conv_biases:
        give_conv_biases(model)
    return model


def has_batchnorm(path: Path) -> bool:
    return any(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)


def folded_in_torch(model: nn.Module) -> nn.Module:
    """``model`` with each Conv2d + BatchNorm2d of ``features`` fused as the exporter folds them."""
    fused = copy.deepcopy(model)
    features = fused.features
    assert isinstance(features, nn.Sequential)
    layers: list[nn.Module] = []
    for layer in features:
        if isinstance(layer, nn.BatchNorm2d):
            conv = layers.pop()
            assert isinstance(conv, nn.Conv2d)
            layer = fuse_conv_bn_eval(conv, layer)
        layers.append(layer)
    fused.features = nn.Sequential(*layers)
    return fused


def test_resnet18_folded_export_matches_reference(tmp_path: Path) -> None:
    model = resnet18()
    path = export(model, tmp_path / "resnet18.onnx", shape=(2, 3, SIZE, SIZE))
    assert not has_batchnorm(path)  # folded: ResNet's convolutions have no bias to merge
    x = batch()
    assert relative_difference(fg_onnx_map(path, x), float64_reference(model, x)) < PARITY_TOL


def test_vgg11_bn_zero_conv_biases_folded_export_matches_reference(tmp_path: Path) -> None:
    model = small_head_vgg11_bn(conv_biases=False)
    path = export(model, tmp_path / "vgg.onnx", shape=(2, 3, SIZE, SIZE))
    assert not has_batchnorm(path)
    x = batch()
    assert relative_difference(fg_onnx_map(path, x), float64_reference(model, x)) < PARITY_TOL


@pytest.fixture(scope="module")
def biased_vgg(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, np.ndarray]:
    """VGG-11-BN features with conv biases, and the reference's float64 map of them."""
    model = small_head_vgg11_bn(conv_biases=True)
    return model, float64_reference(model, batch())


def test_vgg11_bn_conv_biases_folded_export_merges_two_taps(
        biased_vgg: tuple[nn.Module, np.ndarray], tmp_path: Path) -> None:
    model, expected = biased_vgg
    path = export(model, tmp_path / "folded.onnx", shape=(2, 3, SIZE, SIZE))
    assert not has_batchnorm(path)
    x = batch()
    actual = fg_onnx_map(path, x)
    # Measured: Pearson 0.978, max relative difference 0.38.
    assert pearson(actual, expected) < 0.999
    assert relative_difference(actual, expected) > 0.1
    merged = float64_reference(folded_in_torch(model), x)
    assert relative_difference(actual, merged) < PARITY_TOL


def test_vgg11_bn_conv_biases_batchnorm_kept_matches_reference(
        biased_vgg: tuple[nn.Module, np.ndarray], tmp_path: Path) -> None:
    model, expected = biased_vgg
    # TrainingMode.PRESERVE, do_constant_folding=False (either alone keeps BatchNorm too).
    path = export(model, tmp_path / "kept.onnx", shape=(2, 3, SIZE, SIZE), fold=False)
    assert has_batchnorm(path)
    assert relative_difference(fg_onnx_map(path, batch()), expected) < PARITY_TOL


@pytest.mark.slow
@pytest.mark.parametrize("conv_biases", [False, True])
def test_full_vgg11_bn_at_224(conv_biases: bool, tmp_path: Path) -> None:
    """The whole torchvision VGG-11-BN (7x7 pooling, 4096-wide classifier) at 224x224."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(weights=None).eval()
    randomize_batchnorm(model, seed=1)
    if conv_biases:
        give_conv_biases(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = float64_reference(model, x)
    kept = export(model, tmp_path / "kept.onnx", shape=(1, 3, 224, 224), fold=False)
    assert relative_difference(fg_onnx_map(kept, x), expected) < FULL_SIZE_TOL
    folded = fg_onnx_map(export(model, tmp_path / "folded.onnx", shape=(1, 3, 224, 224)), x)
    if conv_biases:
        assert relative_difference(folded, expected) > 0.1
    else:
        assert relative_difference(folded, expected) < FULL_SIZE_TOL
