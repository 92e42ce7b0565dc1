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


class YoloConv(nn.Module):
    """Conv (no bias) - BatchNorm - SiLU, as YOLO detectors build every layer."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Dfl(nn.Module):
    """Distribution focal loss head: a softmax over 16 bins and a fixed 1x1 Conv (its mean)."""

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1)
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class TinyYolo(nn.Module):
    """A YOLOv8-style detector of any input size (multiples of 8): strided SiLU convs, an
    SPPF max pool, a nearest x2 upsample with a Concat, two heads with DFL boxes and anchors
    computed from the feature sizes; output [N, 4 + classes, anchors]."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(YoloConv(3, 8, 3, 2), YoloConv(8, 16, 3, 2))
        self.down = YoloConv(16, 16, 3, 2)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = YoloConv(32, 16, 1)
        self.box = nn.ModuleList(
            [nn.Sequential(YoloConv(16, 16), nn.Conv2d(16, 64, 1)) for _ in range(2)])
        self.cls = nn.ModuleList(
            [nn.Sequential(YoloConv(16, 16), nn.Conv2d(16, classes, 1)) for _ in range(2)])
        self.dfl = Dfl()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.stem(x)
        p4 = self.pool(self.down(p3))
        p3 = self.fuse(torch.cat([p3, self.up(p4)], 1))
        heads = [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((p3, p4))]
        b = x.shape[0]
        flat = torch.cat([h.view(b, 64 + self.classes, -1) for h in heads], 2)
        box, cls = flat.split((64, self.classes), 1)
        anchors, strides = [], []
        for head, stride in zip(heads, (4, 8), strict=True):
            h, w = head.shape[2:]
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float) + 0.5,
                                    torch.arange(w, dtype=torch.float) + 0.5, indexing="ij")
            anchors.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(stride)))
        anchor = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        stride = torch.cat(strides).transpose(0, 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        return torch.cat(((anchor + (rb - lt) / 2) * stride, (lt + rb) * stride, cls.sigmoid()), 1)


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
