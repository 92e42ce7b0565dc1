"""Small torch models with known answers for the target tests: each explained score reads
only the pixels it should (a box's cell, a region's pixels, a character's columns)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch_models import export, export_any_size

SIDE = 32
CELL = 8


class BoxDetector(nn.Module):
    """YOLOv8-style output [N, 4 + C, 16]: one anchor per 8x8 cell of a 32x32 input, its box
    the cell, its class logit the mean over the cell of pixel-local (1x1 conv, ReLU)
    features, so that a box's score depends only on the pixels inside it; the class
    probabilities are a final Sigmoid's, concatenated after the boxes."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))
        self.pool = nn.AvgPool2d(CELL)
        cells = SIDE // CELL
        ys, xs = torch.meshgrid(torch.arange(cells) + 0.5, torch.arange(cells) + 0.5,
                                indexing="ij")
        size = torch.full((cells * cells,), float(CELL))
        boxes = torch.stack([xs.reshape(-1) * CELL, ys.reshape(-1) * CELL, size, size])
        self.register_buffer("boxes", boxes.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.pool(self.features(x)).flatten(2)
        boxes = self.boxes.expand(x.shape[0], -1, -1)
        return torch.cat([boxes, logits.sigmoid()], 1)


class PixelSegmenter(nn.Module):
    """[N, C, H, W] logits of pixel-local features: a region's score reads only its pixels."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ColumnCTC(nn.Module):
    """A CRNN-like CTC recogniser: [N, T, C] log-probabilities with T the input's width, step
    t reading column t only (1x1 convs, then the mean over the height); ``time_first``:
    [T, N, C], as a CRNN with a seq-first LSTM exports them."""

    def __init__(self, classes: int = 5, time_first: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))
        self.order = (2, 0, 1) if time_first else (0, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(2).permute(*self.order).log_softmax(2)


class Embedder(nn.Module):
    """A siamese branch: conv, ReLU, global mean, linear: [N, 6] embeddings."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Regressor(nn.Module):
    """A regression head: [N, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with seeded N(0, 0.5) weights."""
    torch.manual_seed(seed)
    for parameter in model.parameters():
        parameter.data.normal_(0.0, 0.5)
    return model.eval()


def exported(model: nn.Module, path: Path, shape: tuple[int, ...] = (2, 3, SIDE, SIDE),
             seed: int = 0) -> Path:
    """``model`` with seeded weights, exported (dynamic batch)."""
    return export(seeded(model, seed), path, shape)


def exported_time_first_ctc(path: Path, batch: bool = True,
                            shape: tuple[int, ...] = (2, 3, 8, 24)) -> Path:
    """A seeded time-first :class:`ColumnCTC` ([T, N, C]) exported with the input's height
    and width open (and its batch, with ``batch``); its weights (seed 2) decode random
    images into several characters with blanks between."""
    out_axes = {0: "T", 1: "N"} if batch else {0: "T"}
    return export_any_size(seeded(ColumnCTC(time_first=True), 2), path, out_axes, shape,
                           batch)


class SSDDetector(nn.Module):
    """SSD-style: [N, 16, 4] boxes and [N, 16, K] class scores, two outputs (boxes first), one
    anchor per 8x8 cell of a 32x32 input, its box the cell (x0, y0, x1, y1; pixels, or
    fractions of the input with ``normalised``) and its class logits the mean over the cell
    of pixel-local (1x1 conv, ReLU) features, so that a box's score reads only its pixels.
    ``softmax``: K = C + 1 classes after a Softmax, class 0 the background (pytorch-ssd);
    else K = C after a Sigmoid."""

    def __init__(self, classes: int = 2, softmax: bool = False, normalised: bool = False,
                 ) -> None:
        super().__init__()
        self.softmax = softmax
        self.features = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(),
                                      nn.Conv2d(8, classes + softmax, 1))
        self.pool = nn.AvgPool2d(CELL)
        cx, cy, w, h = BoxDetector().boxes[0]  # type: ignore[index]
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        self.register_buffer("corners", (corners / SIDE if normalised else corners)[None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.pool(self.features(x)).flatten(2).transpose(1, 2)
        scores = logits.softmax(2) if self.softmax else logits.sigmoid()
        return self.corners.expand(x.shape[0], -1, -1), scores  # type: ignore[operator]


def exported_ssd(path: Path, softmax: bool = False, normalised: bool = False) -> Path:
    """A seeded :class:`SSDDetector` exported with outputs ``boxes`` and ``scores``."""
    model = seeded(SSDDetector(softmax=softmax, normalised=normalised))
    torch.onnx.export(model, (torch.zeros(2, 3, SIDE, SIDE),), str(path), dynamo=False,
                      opset_version=17, input_names=["image"],
                      output_names=["boxes", "scores"],
                      dynamic_axes={"image": {0: "N"}, "boxes": {0: "N"}, "scores": {0: "N"}})
    return path


class QueryDetector(nn.Module):
    """DETR-style: [N, 16, C + 1] logits (the last class: no object) and [N, 16, 4] boxes
    (cx, cy, w, h as fractions, a Sigmoid's as DETR's box head makes them; here of constant
    logits), one query per 8x8 cell reading only its cell; ``box_sigmoid=False``: the boxes
    without the Sigmoid (no evidence of DETR: a raw-logit SSD looks the same)."""

    def __init__(self, classes: int = 2, box_sigmoid: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(),
                                      nn.Conv2d(8, classes + 1, 1))
        self.pool = nn.AvgPool2d(CELL)
        self.boxes = BoxDetector().boxes / SIDE  # type: ignore[operator]
        self.box_sigmoid = box_sigmoid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.pool(self.features(x)).flatten(2).transpose(1, 2)
        boxes = self.boxes.transpose(1, 2)
        if not self.box_sigmoid:
            return logits, boxes.expand(x.shape[0], -1, -1)
        # After the Expand, which reads the input's batch: constant folding keeps the Sigmoid.
        return logits, torch.logit(boxes.double()).float().expand(x.shape[0], -1, -1).sigmoid()


def exported_query_detector(path: Path, box_sigmoid: bool = True) -> Path:
    """A seeded :class:`QueryDetector` exported with outputs ``logits`` and ``boxes``."""
    model = seeded(QueryDetector(box_sigmoid=box_sigmoid))
    torch.onnx.export(model, (torch.zeros(2, 3, SIDE, SIDE),), str(path), dynamo=False,
                      opset_version=17, input_names=["image"],
                      output_names=["logits", "boxes"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}, "boxes": {0: "N"}})
    return path


class TextMap(nn.Module):
    """A DBNet-like text detector: one pixel-local probability map [N, 1, H, W] (Sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = PixelSegmenter(classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).sigmoid()
