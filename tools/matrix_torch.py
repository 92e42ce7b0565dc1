"""Torchvision models of the model matrix, exported with both torch exporters.

Small variants of each family (reduced widths, depths and inputs) form the fast tier that CI
runs; the full-size models the slow tier. Weights are seeded random (no downloads). Besides
the classifiers: a YOLO-style detector, segmenters and CRNNs (tools/torch_task_models.py),
explained through a seed at two input sizes each, and a classifier exported at opset 11
ending in Softmax, explained through its logits.
"""

from __future__ import annotations

import copy
import functools
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as tvm
from matrix_checks import (
    BATCH,
    CLASSES,
    MatrixResult,
    ModelSpec,
    Reference,
    check_exported,
    check_seeded,
    new_result,
)
from torch_task_models import CRNN, SegmentationLogits, TinyYolo, deeplabv3_tiny, lraspp_tiny
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


class Probabilities(nn.Module):
    """A classifier whose output is Softmax(logits): fg-onnx explains the logits before the
    Softmax, so the gradient reference is that of ``logits``."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), 1)


def _resnet_tiny_softmax() -> nn.Module:
    return Probabilities(tvm.ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES))


SEGMENTATION_CLASSES = 3
IMAGE_SIZES = ((64, 64), (96, 128))
CRNN_SIZES = ((32, 16), (32, 28))
"""A CRNN's input is [N, 1, 32, W]: the widths make 4 and 7 steps of its recurrent layer."""
FULL_IMAGE_SIZES = ((224, 224), (256, 320))
NO_RECURRENT_FLOAT16 = ("fg-onnx refuses --precision float16 for recurrent layers (their "
                        "backward pass is a Scan)")
DYNAMO_OPSET_11 = ("it has no opset-11 implementations: it exports at opset 18, and its "
                   "conversion down to 11 fails (torch 2.14, onnx's version converter)")
DYNAMO_GRU = ("torch 2.14's dynamo exporter fails to decompose the bidirectional GRU "
              "(aten.gru.input: a size mismatch in its decomposition)")
BOX_GRADIENT_SCALE = (16.0, "the default 256 overflows float16 in the gradient of the box "
                      "rows (coordinates in pixels) that the seed weighs")


def _segmenter(factory: Callable[..., nn.Module]) -> Callable[[], nn.Module]:
    """A full-size torchvision segmenter's "out" logits, without weights."""
    return lambda: SegmentationLogits(factory(weights=None, weights_backbone=None,
                                              num_classes=SEGMENTATION_CLASSES))


def _task(name: str, family: str, task: str, build: Callable[[], nn.Module],
          sizes: tuple[tuple[int, int], ...], relu: bool, tier: str = "fast",
          **options: Any) -> ModelSpec:
    """A model explained through a seed at ``sizes`` (see ModelSpec for ``options``)."""
    return ModelSpec(name, family, build, 0, relu, tier, task=task, sizes=sizes, seed=True,
                     **options)


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
    ModelSpec("resnet-tiny-softmax-opset11", "resnet", _resnet_tiny_softmax, 64, True, "fast",
              task="classification (Softmax output)", opset=11,
              not_exported={"dynamo": DYNAMO_OPSET_11}),
    _task("yolo-tiny", "yolo", "detection", TinyYolo, IMAGE_SIZES, False,
          float16_gradient_scale=BOX_GRADIENT_SCALE),
    _task("lraspp-mobilenet-v3-tiny", "lraspp", "segmentation",
          functools.partial(lraspp_tiny, SEGMENTATION_CLASSES), IMAGE_SIZES, False),
    _task("deeplabv3-resnet-tiny", "deeplabv3", "segmentation",
          functools.partial(deeplabv3_tiny, SEGMENTATION_CLASSES), IMAGE_SIZES, True),
    _task("crnn-lstm", "crnn", "sequence (per-step logits)",
          functools.partial(CRNN, "lstm", per_step=True), CRNN_SIZES, False, channels=1,
          no_float16=NO_RECURRENT_FLOAT16),
    _task("crnn-gru", "crnn", "sequence (per-step logits)",
          functools.partial(CRNN, "gru", per_step=True), CRNN_SIZES, False, channels=1,
          no_float16=NO_RECURRENT_FLOAT16, not_exported={"dynamo": DYNAMO_GRU}),
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
    _task("lraspp-mobilenet-v3-large", "lraspp", "segmentation",
          _segmenter(tvm.segmentation.lraspp_mobilenet_v3_large), FULL_IMAGE_SIZES, False,
          "slow"),
    _task("deeplabv3-mobilenet-v3-large", "deeplabv3", "segmentation",
          _segmenter(tvm.segmentation.deeplabv3_mobilenet_v3_large), FULL_IMAGE_SIZES, False,
          "slow"),
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


def sample_input(spec: ModelSpec, seed: int = 0,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Deterministic float32 [BATCH, channels, height, width] input (default: the first of
    the spec's input sizes)."""
    rng = np.random.default_rng(2 + seed)
    height, width = size or spec.input_sizes[0]
    return rng.standard_normal((BATCH, spec.channels, height, width)).astype(np.float32)


OpenAxes = tuple[dict[int, str], dict[int, str]]
"""The dims the export leaves open: the input's and the output's (axis -> name)."""
BATCH_ONLY: OpenAxes = ({0: "N"}, {0: "N"})
INPUT_AXIS_NAMES = {0: "N", 2: "H", 3: "W"}


def open_axes(model: nn.Module, spec: ModelSpec) -> OpenAxes:
    """The input's and the output's dims that differ between the spec's input sizes or with
    the batch size (the output's found by running ``model`` at each); a model of one input
    size, the batch only."""
    if not spec.sizes:
        return BATCH_ONLY
    first = spec.input_sizes[0]
    inputs = [sample_input(spec, 0, size) for size in spec.input_sizes]
    inputs.append(sample_input(spec, 0, first)[:1])
    with torch.no_grad():
        outputs = [tuple(model(torch.from_numpy(x)).shape) for x in inputs]

    def differing(shapes: list[tuple[int, ...]], names: dict[int, str]) -> dict[int, str]:
        return {axis: names.get(axis, f"out{axis}") for axis in range(len(shapes[0]))
                if len({shape[axis] for shape in shapes}) > 1}

    return differing([x.shape for x in inputs], INPUT_AXIS_NAMES), differing(outputs, {0: "N"})


def export(model: nn.Module, x: np.ndarray, path: Path, exporter: str,
           axes: OpenAxes = BATCH_ONLY, opset: int = TORCHSCRIPT_OPSET) -> Path:
    """Exports ``model`` with input ``image`` and output ``logits``, the dims of ``axes``
    dynamic; ``opset``: the TorchScript exporter's."""
    example = (torch.from_numpy(x),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, example, str(path), dynamo=False,
                              opset_version=opset, input_names=["image"],
                              output_names=["logits"],
                              dynamic_axes={"image": axes[0], "logits": axes[1]})
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            dims = {axis: batch if axis == 0 else torch.export.Dim.DYNAMIC for axis in axes[0]}
            program = torch.onnx.export(model, example, dynamo=True, input_names=["image"],
                                        output_names=["logits"],
                                        dynamic_shapes=(dims,), verbose=False)
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


def seed_reference(model: nn.Module, x: np.ndarray,
                   seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The output and ∂⟨seed, output⟩/∂x by torch autograd, in the model's precision."""
    dtype = next(model.parameters()).dtype
    image = torch.from_numpy(x).to(dtype).requires_grad_(True)
    output = model(image)
    (output * torch.from_numpy(seed).to(dtype)).sum().backward()
    assert image.grad is not None
    return output.detach().float().numpy(), image.grad.numpy()


Gradient = Callable[[nn.Module, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def float32_and_float64_reference(model: nn.Module,
                                  gradient: Gradient = torch_reference) -> Reference:
    """The matrix's reference: float32 logits, and the input gradient in float32 and in
    float64 (of a float64 copy of the model, made once); ``gradient``: torch_reference
    (classes) or seed_reference."""
    double = copy.deepcopy(model).double()

    def reference(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, grad = gradient(model, x, targets)
        return logits, {"float32": grad, "float64": gradient(double, x, targets)[1]}

    return reference


def classifier_reference(model: nn.Module) -> Reference:
    """float32_and_float64_reference, of the logits for a Probabilities model (its output
    stays the probabilities, which the export is compared with)."""
    if not isinstance(model, Probabilities):
        return float32_and_float64_reference(model)
    of_logits = float32_and_float64_reference(model.logits)

    def reference(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with torch.no_grad():
            probabilities = model(torch.from_numpy(x)).numpy()
        return probabilities, of_logits(x, targets)[1]

    return reference


def run_one(spec: ModelSpec, exporter: str, folder: Path) -> MatrixResult:
    """Builds, exports and checks one (model, exporter); errors are recorded, not raised."""
    result = new_result(spec, exporter)
    try:
        model = build_model(spec)
        path = export(model, sample_input(spec), folder / f"{spec.name}.{exporter}.onnx",
                      exporter, open_axes(model, spec), spec.opset or TORCHSCRIPT_OPSET)
        inputs = functools.partial(sample_input, spec)
        if spec.seed:
            return check_seeded(path, spec, float32_and_float64_reference(model, seed_reference),
                                inputs, result)
        return check_exported(path, classifier_reference(model), inputs, result)
    except Exception as exc:  # the matrix reports every failure instead of stopping
        lines = str(exc).strip().splitlines()
        result.error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        traceback.print_exc(file=sys.stderr)
        return result


VERSIONS = f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}"
