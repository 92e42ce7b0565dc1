"""Detection targets: the class score of one detection of a YOLO-style output, picked after a
score threshold and NMS, or by its overlap with a given box.

Formats (one sample): ``yolov8`` [4 + C, A] (YOLOv8/v11: cx, cy, w, h rows, then class
probabilities), ``yolov5`` [A, 5 + C] (YOLOv5/YOLOX: cx, cy, w, h, objectness, classes),
``detr`` [Q, C + 1] logits (the last class: no object) beside a [Q, 4] output of boxes
(cx, cy, w, h as fractions of the input's size).
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

DETECTION_FORMATS = ("auto", "yolov8", "yolov5", "detr")
DEFAULT_THRESHOLD = 0.25


@dataclass(frozen=True)
class Candidates:
    """Every anchor's box (model input pixels, corners) and class probabilities."""

    boxes: np.ndarray
    """[A, 4] x0, y0, x1, y1."""
    probabilities: np.ndarray
    """[A, C] the detection's probability per class (objectness × class for yolov5)."""


def detection_format(raw_shape: tuple[int, ...], requested: str = "auto") -> str:
    """The format of a YOLO-style output sample, or a one-line error naming the choices."""
    if requested != "auto":
        return requested
    if len(raw_shape) == 2 and min(raw_shape) >= 5 and raw_shape[0] != raw_shape[1]:
        return "yolov8" if raw_shape[0] < raw_shape[1] else "yolov5"
    raise TargetError(f"cannot recognise a detection format in an output of shape "
                      f"{list(raw_shape)} per image: give --detection-format "
                      f"{'|'.join(DETECTION_FORMATS[1:])}")


def box_output(forward: Forward) -> np.ndarray | None:
    """A DETR-style [Q, 4] boxes output beside [Q, C + 1] explained logits, if any."""
    logits = forward.explained
    if logits.ndim != 2 or logits.shape[1] == 4:
        return None
    found = [v for v in forward.outputs.values() if v.shape == (logits.shape[0], 4)]
    return found[0] if found else None


def _detr_candidates(logits: np.ndarray, boxes: np.ndarray,
                     input_size: tuple[int, int]) -> Candidates:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probabilities = (shifted / shifted.sum(1, keepdims=True))[:, :-1]
    height, width = input_size
    cx, cy, w, h = boxes.T.astype(np.float64)
    corners = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                        (cx + w / 2) * width, (cy + h / 2) * height], 1)
    return Candidates(corners, probabilities.astype(np.float64))


def candidates(raw: np.ndarray, layout: str) -> Candidates:
    """Decodes a raw YOLO-style output sample."""
    rows = raw if layout == "yolov8" else raw.T
    if rows.ndim != 2 or rows.shape[0] < (5 if layout == "yolov8" else 6):
        raise TargetError(f"an output of shape {list(raw.shape)} per image is not {layout}")
    cx, cy, w, h = rows[:4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    probabilities = rows[4:].T if layout == "yolov8" else (rows[5:] * rows[4:5]).T
    return Candidates(boxes.astype(np.float64), probabilities.astype(np.float64))


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


def detection_targets(forward: Forward, request: TargetRequest, raw_name: str) -> Picked:
    """The ``top_k`` best detections above ``request.threshold`` after NMS (of class
    ``request.class_index()`` only when given), or the one that best overlaps
    ``request.box``. The seed picks the class score of the explained tensor: the output's
    class row, or the logit where the explained tensor is the logits before a Sigmoid
    ([C, A] beside the [4 + C, A] output)."""
    boxes = box_output(forward)
    if request.detection_format == "detr" and boxes is None:
        raise TargetError("a DETR-style detector needs a [N, Q, 4] boxes output beside its "
                          "[N, Q, C + 1] logits (--output names the logits)")
    if boxes is not None and request.detection_format in ("auto", "detr"):
        layout = "detr"
        found = _detr_candidates(forward.explained, boxes, forward.input_size)
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
    if layout == "detr":
        seed[anchor, cls] = 1.0  # the class logit, before the softmax
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
