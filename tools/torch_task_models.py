"""Torch models of the tasks beyond classification (a YOLO-style detector, a segmenter's
logits, CRNNs), shared by the model matrix (tools/matrix_torch.py) and the tests (tools/ is on
pytest's pythonpath). Torch is a test and tool dependency only, never the library's."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.resnet import BasicBlock
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

# torchvision's own LRASPP builder (private; torchvision is pinned in pyproject's test extra):
# it picks the backbone's low- and high-resolution stages.
from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3


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


class SegmentationLogits(nn.Module):
    """A torchvision segmenter's "out" logits (its forward returns a dict)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


class CRNN(nn.Module):
    """Two Conv + ReLU + MaxPool stages on a [N, 1, 32, W] input; the width becomes the time
    axis of a bidirectional LSTM or GRU, whose outputs are averaged over time into a Linear
    classifier, or with ``per_step`` each go through it: [N, W/4, classes] logits, as a CTC
    text recogniser emits."""

    def __init__(self, cell: str, classes: int = 5, hidden: int = 8,
                 per_step: bool = False) -> None:
        super().__init__()
        self.per_step = per_step
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = recurrent(6 * 8, hidden, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)                              # [N, C, 8, W/4]
        sequence = features.permute(3, 0, 1, 2).flatten(2)   # [T, N, C*8]
        states, _ = self.rnn(sequence)
        if self.per_step:
            return self.head(states.transpose(0, 1))
        return self.head(states.mean(0))


def lraspp_tiny(classes: int) -> nn.Module:
    """LRASPP on a MobileNet-V3 of one block per stage (torchvision's own classes and its
    LRASPP builder): the segmenter's structure, with a dilated last stage, SE blocks and
    hardswish, at a size the CI machine exports with the dynamo exporter in reasonable time."""
    conf = functools.partial(InvertedResidualConfig, width_mult=1.0)
    setting = [conf(16, 3, 16, 16, True, "RE", 2, 1), conf(16, 3, 72, 24, False, "RE", 2, 1),
               conf(24, 5, 96, 40, True, "HS", 2, 1), conf(40, 5, 144, 48, True, "HS", 2, 2)]
    return SegmentationLogits(_lraspp_mobilenetv3(MobileNetV3(setting, 256), classes))


def deeplabv3_tiny(classes: int, width: int = 32) -> nn.Module:
    """DeepLabV3 on a ResNet of one BasicBlock per stage: torchvision's DeepLabHead layout
    (ASPP, 3x3 Conv-BN-ReLU, 1x1 Conv) at ``width`` channels instead of 256, and atrous
    rates for the small feature maps (1, 2, 3 instead of 12, 24, 36); ReLU throughout."""
    backbone = IntermediateLayerGetter(tvm.ResNet(BasicBlock, [1, 1, 1, 1]), {"layer4": "out"})
    head = nn.Sequential(ASPP(512, (1, 2, 3), width),
                         nn.Conv2d(width, width, 3, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, classes, 1))
    return SegmentationLogits(DeepLabV3(backbone, head))
