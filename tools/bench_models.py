"""The benchmark's models: torchvision's (or a tiny CNN) with random weights and random
BatchNorm statistics, exported to ONNX as a usual deployment export is (tools/bench.py's
docstring has the method). torch is imported lazily: the command line must be able to say
that it is missing."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_errors import BenchError

TINY_SIZE = 32  # the tiny model's image size (--image-size is for the torchvision models)


def image_size(name: str, requested: int) -> int:
    """The image size the model ``name`` is benchmarked at."""
    return TINY_SIZE if name == "tiny" else requested


def build_torch_model(name: str) -> Any:
    """An eval-mode torch model with random weights (seeded by the caller) and random
    BatchNorm statistics, so that its folded biases are not zero (as in a trained model)."""
    import torch
    import torch.nn as nn
    from matrix_torch import set_batchnorm_statistics

    if name == "tiny":
        # Conv-BN-ReLU, max pool, stride-2 conv, global pool, Linear: the tap kinds of a CNN.
        model: nn.Module = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )
    else:
        import torchvision.models

        factory = getattr(torchvision.models, name, None)
        if not callable(factory):
            raise BenchError(f"unknown model {name!r}: use 'tiny' or a torchvision.models name")
        model = factory(weights=None)
    set_batchnorm_statistics(model, torch.Generator().manual_seed(1))
    return model.eval()


def export_model(name: str, folder: Path, image_size: int, seed: int) -> tuple[Path, Path]:
    """Exports ``name`` to ONNX and saves its state dict (for the reference) in ``folder``."""
    import torch

    torch.manual_seed(seed)
    model = build_torch_model(name)
    onnx_path, state_path = folder / f"{name}.onnx", folder / f"{name}.pt"
    torch.save(model.state_dict(), state_path)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, image_size, image_size),), str(onnx_path),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return onnx_path, state_path


def check_dependencies(models: Sequence[str]) -> None:
    """Raises BenchError naming what is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise BenchError("torch is not installed (pip install torch)") from exc
    if any(m != "tiny" for m in models):
        try:
            import torchvision  # noqa: F401
        except ImportError as exc:
            raise BenchError("torchvision is not installed (pip install torchvision); "
                             "--models tiny needs torch only") from exc
