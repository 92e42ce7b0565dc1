"""Small torch models exported to ONNX for tests (torch is a test-only dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualCNN(nn.Module):
    """Conv-BN-ReLU(inplace), MaxPool, a residual block, global average pool, Linear."""

    def __init__(self, classes: int = 5, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, classes)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(x + self.bn2(self.conv2(x)))
        x = self.relu(self.conv3(x))
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return torch.softmax(logits, 1) if self.softmax else logits


class SmoothCNN(nn.Module):
    """Non-homogeneous activations: ReLU6, Hardswish, SiLU, GELU, sigmoid gating, LayerNorm."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv2 = nn.Conv2d(8, 12, 1)
        self.se = nn.Conv2d(12, 12, 1)
        self.norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.conv1(x))
        x = F.hardswish(self.dw(x))
        x = F.silu(self.conv2(x))
        x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
        x = F.gelu(x).mean((2, 3))
        return self.fc(self.norm(x))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Gives every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(c, generator=generator))
            module.bias.data.copy_(torch.randn(c, generator=generator))


def export(model: nn.Module, path: Path, shape: tuple[int, ...] = (2, 3, 32, 32),
           fold: bool = True) -> Path:
    """Exports ``model`` (eval mode) with the TorchScript exporter, batch dim dynamic.

    ``fold=False`` keeps BatchNormalization nodes instead of folding them into Conv.
    """
    model.eval()
    example = torch.zeros(shape)
    torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["out"],
        dynamic_axes={"image": {0: "N"}, "out": {0: "N"}},
        training=torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=fold,
    )
    return path


def images(n: int = 2, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0) -> np.ndarray:
    """Deterministic float32 test inputs."""
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


class TinyViT(nn.Module):
    """Patch-embedding Conv, class token, position embedding, torch attention, GELU MLP."""

    def __init__(self, classes: int = 3, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.5)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], 1) + self.pos
        h = self.norm1(tokens)
        tokens = tokens + self.attn(h, h, h, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.head(tokens[:, 0])


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, pointwise MLP with GELU, layer scale."""

    def __init__(self, classes: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def export_any_size(model: nn.Module, path: Path, out_axes: dict[int, str],
                    shape: tuple[int, ...] = (2, 3, 64, 64), batch: bool = True) -> Path:
    """Exports ``model`` (eval mode, TorchScript exporter) with H and W dynamic (and the
    batch, with ``batch``); ``out_axes``: the output's dynamic dims."""
    model.eval()
    dims = {0: "N", 2: "H", 3: "W"} if batch else {2: "H", 3: "W"}
    torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["out"],
                      dynamic_axes={"image": dims, "out": out_axes})
    return path
