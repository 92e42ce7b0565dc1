"""Detection targets: the class score of one detection, picked after a score threshold and
per-class NMS, or by its overlap with a given box.

Formats (one sample): ``yolov8`` [4 + C, A] (YOLOv8/v11: cx, cy, w, h rows, then class
probabilities), ``yolov5`` [A, 5 + C] (YOLOv5/YOLOX: cx, cy, w, h, objectness, classes), and
two with the class scores beside a separate [A, 4] boxes output: ``detr`` [Q, C + 1] logits
(the last class: no object; boxes cx, cy, w, h as fractions of the input's size) and ``ssd``
[A, C] class scores after a final Sigmoid, or a Softmax whose class 0 is the background, or
raw logits (boxes x0, y0, x1, y1 by default, in pixels or fractions: pytorch-ssd, torchvision
SSD with the boxes decoded, TF Object Detection API's raw outputs with ``yxyx``). Where the
graph has the Sigmoid/Softmax, the explained score is the logit before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fg_onnx.targets.base import (
    Box,
    Forward,
    Picked,
    Target,
    TargetError,
    TargetRequest,
    label_of,
)

DETECTION_FORMATS = ("auto", "yolov8", "yolov5", "detr", "ssd")
PAIR_FORMATS = ("detr", "ssd")
"""The formats whose boxes are an output of their own."""
BOX_FORMATS = ("auto", "xyxy", "yxyx", "cxcywh")
BOX_SCALES = ("auto", "pixels", "normalised")
DEFAULT_THRESHOLD = 0.25
NORMALISED_LIMIT = 2.0
"""Boxes whose every coordinate lies within ±this are fractions of the input (``auto``
scale): a box in pixels of any real input reaches further."""


@dataclass(frozen=True)
class Candidates:
    """Every anchor's box (model input pixels, corners) and class probabilities."""

    boxes: np.ndarray
    """[A, 4] x0, y0, x1, y1."""
    probabilities: np.ndarray
    """[A, C] the detection's probability per class (objectness × class for yolov5)."""
    background: int | None = None
    """A class that is no detection (an SSD Softmax's class 0), unless asked for by name."""


@dataclass(frozen=True)
class PairGraph:
    """What the graph says of a detector whose boxes are an output of their own (read when
    the model is opened, fg_onnx.targets.auto.pair_graph)."""

    boxes: str | None = None
    """The boxes output, by name."""
    activation: str | None = None
    """The Sigmoid, Softmax or LogSoftmax that makes the class scores output, or None (raw
    logits)."""
    boxes_op: str | None = None
    """The op that makes the boxes output (DETR-family heads: a Sigmoid)."""

    @property
    def format(self) -> str | None:
        """``ssd`` where the graph makes probabilities of the class scores, ``detr`` for raw
        logits beside a Sigmoid's boxes (DETR's heads), else None: no evidence either way."""
        if self.activation is not None:
            return "ssd"
        return "detr" if self.boxes_op == "Sigmoid" else None

    @property
    def box_format(self) -> str:
        """SSD boxes' order where the request says ``auto``: cxcywh where the boxes are a
        Sigmoid's (DETR-family heads with sigmoid scores, RT-DETR), else xyxy."""
        return "cxcywh" if self.boxes_op == "Sigmoid" else "xyxy"


def detection_format(raw_shape: tuple[int, ...], requested: str = "auto") -> str:
    """The format of a YOLO-style output sample, or a one-line error naming the choices."""
    if requested != "auto":
        return requested
    if len(raw_shape) == 2 and min(raw_shape) >= 5 and raw_shape[0] != raw_shape[1]:
        return "yolov8" if raw_shape[0] < raw_shape[1] else "yolov5"
    raise TargetError(f"cannot recognise a detection format in an output of shape "
                      f"{list(raw_shape)} per image: give --detection-format "
                      f"{'|'.join(DETECTION_FORMATS[1:])}")


def box_output(forward: Forward, name: str | None = None) -> np.ndarray | None:
    """The [A, 4] boxes output beside the [A, K] explained class scores: ``name``, else the
    first output of that shape; None where there is none."""
    scores = forward.explained
    if scores.ndim != 2 or scores.shape[1] == 4:
        return None
    shape = (scores.shape[0], 4)
    if name is not None and name in forward.outputs:
        named = forward.outputs[name]
        return named if named.shape == shape else None
    found = [v for v in forward.outputs.values() if v.shape == shape]
    return found[0] if found else None


def pair_format(forward: Forward, request: TargetRequest, graph: PairGraph) -> str | None:
    """``detr`` or ``ssd`` for class scores beside a boxes output (as requested, else as the
    graph says), None for a YOLO-style output; a requested pair without its boxes output is
    refused in one line."""
    requested = request.detection_format
    if requested not in DETECTION_FORMATS:
        raise TargetError(f"unknown detection format {requested!r}: choose "
                          f"{', '.join(DETECTION_FORMATS)}")
    boxes = box_output(forward, graph.boxes)
    if requested in PAIR_FORMATS and boxes is None:
        rows = forward.explained.shape[0] if forward.explained.ndim else "A"
        shapes = ", ".join(f"{name} [N, {', '.join(map(str, v.shape))}]"
                           for name, v in forward.outputs.items())
        raise TargetError(f"--detection-format {requested} needs a [N, {rows}, 4] boxes output "
                          f"beside the [N, {rows}, C] class scores (--output names the "
                          f"scores); the outputs are {shapes}")
    if boxes is None or requested not in ("auto", *PAIR_FORMATS):
        return None
    if requested != "auto":
        return requested
    if graph.format is None:
        raise TargetError(f"raw class logits beside the boxes {graph.boxes or 'output'} "
                          "(no Sigmoid/Softmax on the scores, no Sigmoid on the boxes) could "
                          "be SSD's or DETR's: give --detection-format "
                          f"{'|'.join(DETECTION_FORMATS[1:])}")
    return graph.format


def corners(boxes: np.ndarray, box_format: str, scale: str,
            input_size: tuple[int, int]) -> np.ndarray:
    """[A, 4] boxes (xyxy, yxyx or cxcywh; in pixels, fractions of the input, or ``auto``:
    fractions where every coordinate is within ±NORMALISED_LIMIT) as x0, y0, x1, y1 in the
    model input's pixels."""
    if box_format not in BOX_FORMATS[1:]:
        raise TargetError(f"unknown box format {box_format!r}: choose "
                          f"{', '.join(BOX_FORMATS)}")
    if scale not in BOX_SCALES:
        raise TargetError(f"unknown box scale {scale!r}: choose {', '.join(BOX_SCALES)}")
    values = np.asarray(boxes, np.float64)
    if box_format == "yxyx":
        values = values[:, [1, 0, 3, 2]]
    elif box_format == "cxcywh":
        cx, cy, w, h = values.T
        values = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    if scale == "auto":
        small = np.abs(values).max(initial=0.0) <= NORMALISED_LIMIT
        scale = "normalised" if small else "pixels"
    if scale == "normalised":
        height, width = input_size
        values = values * np.array([width, height, width, height], np.float64)
    return values


def _box_convention(layout: str, request: TargetRequest, graph: PairGraph) -> tuple[str, str]:
    """(order, scale) of a pair's boxes: the request's, else the format's own."""
    own = ("cxcywh", "normalised") if layout == "detr" else (graph.box_format, "auto")
    return (own[0] if request.box_format == "auto" else request.box_format,
            own[1] if request.box_scale == "auto" else request.box_scale)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return np.asarray(shifted / shifted.sum(1, keepdims=True))


def pair_candidates(forward: Forward, request: TargetRequest, scores_name: str,
                    graph: PairGraph, layout: str) -> Candidates:
    """Decodes class scores beside a boxes output. DETR: the softmax of the logits without
    the no-object class. SSD: the model's probabilities where it makes them (a Softmax's
    class 0 is the background), else the sigmoid of raw logits."""
    boxes = box_output(forward, graph.boxes)
    assert boxes is not None  # pair_format found them
    order, scale = _box_convention(layout, request, graph)
    found = corners(boxes, order, scale, forward.input_size)
    if layout == "detr":
        return Candidates(found, _softmax(forward.explained.astype(np.float64))[:, :-1])
    scores = forward.outputs.get(scores_name, forward.explained).astype(np.float64)
    if scores.shape != forward.explained.shape:
        raise TargetError(f"the class scores {scores_name!r} are {list(scores.shape)} per "
                          f"image; the explained tensor is {list(forward.explained.shape)}")
    if graph.activation is None:
        return Candidates(found, 1 / (1 + np.exp(-scores)))
    if graph.activation == "Sigmoid":
        return Candidates(found, scores)
    probabilities = np.exp(scores) if graph.activation == "LogSoftmax" else scores
    return Candidates(found, probabilities, background=0)


def candidates(raw: np.ndarray, layout: str) -> Candidates:
    """Decodes a raw YOLO-style output sample."""
    rows = raw if layout == "yolov8" else raw.T
    if rows.ndim != 2 or rows.shape[0] < (5 if layout == "yolov8" else 6):
        raise TargetError(f"an output of shape {list(raw.shape)} per image is not {layout}")
    boxes = corners(rows[:4].T, "cxcywh", "pixels", (0, 0))
    probabilities = rows[4:].T if layout == "yolov8" else (rows[5:] * rows[4:5]).T
    return Candidates(boxes, probabilities.astype(np.float64))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of ``boxes`` (corners)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-12))


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, overlap: float,
        ) -> list[int]:
    """Greedy per-class non-maximum suppression; the kept indices, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if not order:
            break
        rest = np.asarray(order)
        same = classes[rest] == classes[best]
        order = [int(i) for i in rest[~(same & (iou(boxes[best], boxes[rest]) > overlap))]]
    return kept


def detection_targets(forward: Forward, request: TargetRequest, raw_name: str,
                      graph: PairGraph | None = None) -> Picked:
    """The ``top_k`` best detections above ``request.threshold`` after NMS (of class
    ``request.class_index()`` only when given; never an SSD Softmax's background), or the
    one that best overlaps ``request.box``. The seed picks the class score of the explained
    tensor: the output's class row, or the logit where the explained tensor is the logits
    before a Sigmoid ([C, A] beside the [4 + C, A] output) or a Softmax (``raw_name``: the
    class scores beside a boxes output)."""
    graph = graph or PairGraph()
    layout = pair_format(forward, request, graph)
    if layout is not None:
        found = pair_candidates(forward, request, raw_name, graph, layout)
    else:
        raw = forward.outputs[raw_name]
        layout = detection_format(raw.shape, request.detection_format)
        found = candidates(raw, layout)
    chosen = request.class_index()
    classes_count = found.probabilities.shape[1]
    if chosen is not None and not 0 <= chosen < classes_count:
        raise TargetError(f"class {chosen} is out of range: the detector has {classes_count} "
                          f"classes (0..{classes_count - 1})")
    probabilities = found.probabilities if chosen is None else found.probabilities[:, [chosen]]
    if chosen is None and found.background is not None:
        probabilities = probabilities.copy()
        probabilities[:, found.background] = -np.inf  # never the best class
    classes = probabilities.argmax(1) if chosen is None else np.full(len(probabilities),
                                                                     chosen)
    best = probabilities.max(1)
    threshold = DEFAULT_THRESHOLD if request.threshold is None else request.threshold
    above = np.nonzero(best >= threshold)[0]
    if len(above) == 0:
        return Picked([], f"no detection above the threshold {threshold:g}")
    kept = above[nms(found.boxes[above], best[above], classes[above], request.iou)]
    if request.box is not None:
        overlaps = iou(np.asarray(request.box, np.float64), found.boxes[kept])
        if overlaps.max() <= 0:
            return Picked([], f"no detection above the threshold {threshold:g} "
                              f"overlaps the box {list(request.box)}")
        picked: list[tuple[int, float | None]] = [
            (int(kept[overlaps.argmax()]), float(overlaps.max()))]
    else:
        picked = [(int(a), None) for a in kept[:request.top_k]]
    return Picked([_target(forward, request, layout, found, anchor, int(classes[anchor]),
                           float(best[anchor]), overlap) for anchor, overlap in picked])


def _target(forward: Forward, request: TargetRequest, layout: str, found: Candidates,
            anchor: int, cls: int, probability: float, overlap: float | None) -> Target:
    explained = forward.explained
    seed = np.zeros(explained.shape, np.float32)
    classes_count = found.probabilities.shape[1]
    if layout in PAIR_FORMATS:
        seed[anchor, cls] = 1.0  # the class logit, before the Softmax/Sigmoid
    elif layout == "yolov8":
        row = cls if explained.shape[0] == classes_count else 4 + cls
        seed[row, anchor] = 1.0
    else:
        # objectness × class: its linearisation at the image, halved so that its value
        # ⟨seed, output⟩ is the product itself (a product of two terms is 2-homogeneous).
        objectness, class_probability = explained[anchor, 4], explained[anchor, 5 + cls]
        seed[anchor, 4] = class_probability / 2
        seed[anchor, 5 + cls] = objectness / 2
    box: Box = tuple(float(v) for v in found.boxes[anchor])  # type: ignore[assignment]
    fields: dict[str, object] = {
        "target": cls, "target_label": label_of(request.labels, cls),
        "box": [round(v, 2) for v in box], "confidence": round(probability, 6),
        "anchor": anchor}
    if overlap is not None:
        fields["iou"] = round(overlap, 4)
    return Target(seed, fields, box=box)
