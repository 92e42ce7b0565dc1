"""Torchvision models of the model matrix, exported with both torch exporters.

Small variants of each family (reduced widths, depths and inputs) form the fast tier that CI
runs; the full-size models the slow tier. Weights are seeded random (no downloads).
"""

from __future__ import annotations

import copy
import functools
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as tvm
from matrix_checks import BATCH, CLASSES, MatrixResult, ModelSpec, check_exported
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.resnet import BasicBlock

EXPORTERS = ("torchscript", "dynamo")
TORCHSCRIPT_OPSET = 17


def _tiny_vgg() -> nn.Module:
    # VGG-11-BN's layer pattern at one eighth of the widths, and a narrow classifier: the
    # 4096-wide one alone would be 120 M parameters.
    cfg: list[str | int] = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]
    model = tvm.VGG(tvm.vgg.make_layers(cfg, batch_norm=True), num_classes=CLASSES)
    model.classifier = nn.Sequential(
        nn.Linear(64 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, CLASSES),
    )
    return model


def _tiny_convnext() -> nn.Module:
    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    # A visible layer scale: the default 1e-6 would make every block nearly the identity.
    return tvm.ConvNeXt(blocks, layer_scale=0.5, num_classes=CLASSES)


def _tiny_vit() -> nn.Module:
    return tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                 hidden_dim=32, mlp_dim=64, num_classes=CLASSES)


def _classes(factory: Callable[..., nn.Module], **kwargs: object) -> Callable[[], nn.Module]:
    return functools.partial(factory, num_classes=CLASSES, **kwargs)


FAST = [
    ModelSpec("resnet-tiny", "resnet",
              _classes(tvm.ResNet, block=BasicBlock, layers=[1, 1, 1, 1]), 64, True, "fast"),
    ModelSpec("vgg11-bn-narrow", "vgg", _tiny_vgg, 224, True, "fast"),
    ModelSpec("mobilenet-v2-0.5", "mobilenet_v2", _classes(tvm.mobilenet_v2, width_mult=0.5),
              64, False, "fast"),
    ModelSpec("mobilenet-v3-small", "mobilenet_v3", _classes(tvm.mobilenet_v3_small), 64,
              False, "fast"),
    ModelSpec("densenet-tiny", "densenet",
              _classes(tvm.DenseNet, growth_rate=8, block_config=(2, 2, 2, 2),
                       num_init_features=16), 64, True, "fast"),
    ModelSpec("efficientnet-b0", "efficientnet", _classes(tvm.efficientnet_b0), 64, False,
              "fast"),
    ModelSpec("squeezenet1.1", "squeezenet", _classes(tvm.squeezenet1_1), 64, True, "fast"),
    ModelSpec("convnext-tiny-blocks", "convnext", _tiny_convnext, 64, False, "fast"),
    ModelSpec("vit-tiny", "vit", _tiny_vit, 32, False, "fast"),
]

SLOW = [
    ModelSpec("resnet18", "resnet", _classes(tvm.resnet18), 224, True, "slow"),
    ModelSpec("resnet50", "resnet", _classes(tvm.resnet50), 224, True, "slow"),
    ModelSpec("vgg11-bn", "vgg", _classes(tvm.vgg11_bn), 224, True, "slow"),
    ModelSpec("mobilenet-v2", "mobilenet_v2", _classes(tvm.mobilenet_v2), 224, False, "slow"),
    ModelSpec("mobilenet-v3-small-224", "mobilenet_v3", _classes(tvm.mobilenet_v3_small), 224,
              False, "slow"),
    ModelSpec("densenet121", "densenet", _classes(tvm.densenet121), 224, True, "slow"),
    ModelSpec("efficientnet-b0-224", "efficientnet", _classes(tvm.efficientnet_b0), 224, False,
              "slow"),
    ModelSpec("squeezenet1.1-224", "squeezenet", _classes(tvm.squeezenet1_1), 224, True,
              "slow"),
    ModelSpec("convnext-tiny", "convnext", _classes(tvm.convnext_tiny), 224, False, "slow"),
    ModelSpec("vit-b-16", "vit", _classes(tvm.vit_b_16), 224, False, "slow"),
]

SPECS = {spec.name: spec for spec in [*FAST, *SLOW]}


def set_batchnorm_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Gives every BatchNorm2d random statistics and affine parameters, as a trained network
    has: freshly initialised ones are the identity, so folded convolutions get zero biases
    and FullGrad's bias terms would vanish."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_((torch.rand(c, generator=generator) - 0.5) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                module.bias.copy_((torch.rand(c, generator=generator) - 0.5) * 0.2)


def build_model(spec: ModelSpec) -> nn.Module:
    """The model in eval mode with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = spec.build()
    assert isinstance(model, nn.Module)
    generator = torch.Generator().manual_seed(1)
    set_batchnorm_statistics(model, generator)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                # torchvision zero-initialises ViT's head: constant logits, zero gradient.
                nn.init.normal_(module.weight, std=module.in_features**-0.5, generator=generator)
                nn.init.normal_(module.bias, std=0.1, generator=generator)
    return model.eval()


def sample_input(spec: ModelSpec, seed: int = 0) -> np.ndarray:
    """Deterministic float32 [BATCH, 3, size, size] input."""
    rng = np.random.default_rng(2 + seed)
    return rng.standard_normal((BATCH, 3, spec.size, spec.size)).astype(np.float32)


def export(model: nn.Module, x: np.ndarray, path: Path, exporter: str) -> Path:
    """Exports ``model`` with input ``image`` and output ``logits``, batch dimension dynamic."""
    example = (torch.from_numpy(x),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, example, str(path), dynamo=False,
                              opset_version=TORCHSCRIPT_OPSET, input_names=["image"],
                              output_names=["logits"],
                              dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(model, example, dynamo=True, input_names=["image"],
                                        output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
            assert program is not None
            program.save(str(path))
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    return path


def torch_reference(model: nn.Module, x: np.ndarray,
                    targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and ∂(Σ_n logits[n, targets[n]])/∂x by torch autograd, in the model's precision."""
    dtype = next(model.parameters()).dtype
    image = torch.from_numpy(x).to(dtype).requires_grad_(True)
    logits = model(image)
    logits.gather(1, torch.from_numpy(targets)[:, None]).sum().backward()
    assert image.grad is not None
    return logits.detach().float().numpy(), image.grad.numpy()


def float32_and_float64_reference(
    model: nn.Module,
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The matrix's reference: float32 logits, and the input gradient in float32 and in
    float64 (of a float64 copy of the model, made once)."""
    double = copy.deepcopy(model).double()

    def reference(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, grad = torch_reference(model, x, targets)
        return logits, {"float32": grad, "float64": torch_reference(double, x, targets)[1]}

    return reference


def run_one(spec: ModelSpec, exporter: str, folder: Path) -> MatrixResult:
    """Builds, exports and checks one (model, exporter); errors are recorded, not raised."""
    result = MatrixResult(spec.name, spec.family, exporter, spec.tier, spec.relu)
    try:
        model = build_model(spec)
        path = export(model, sample_input(spec), folder / f"{spec.name}.{exporter}.onnx",
                      exporter)

        return check_exported(path, float32_and_float64_reference(model),
                              functools.partial(sample_input, spec), result)
    except Exception as exc:  # the matrix reports every failure instead of stopping
        lines = str(exc).strip().splitlines()
        result.error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        traceback.print_exc(file=sys.stderr)
        return result


VERSIONS = f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}"
