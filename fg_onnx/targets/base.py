"""What a target is: one linear functional of the explained tensor for one image (its seed),
with the fields its summary row holds, and what a task needs to pick targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fg_onnx.errors import FgOnnxError

Task = Literal["classification", "detection", "segmentation", "sequence", "embedding",
               "scalar"]
TASKS: tuple[Task, ...] = ("classification", "detection", "segmentation", "sequence",
                           "embedding", "scalar")
TASK_CHOICES = ("auto", *TASKS)

Box = tuple[float, float, float, float]
"""[x0, y0, x1, y1] in the model input's pixels."""


LABELS_KEY = "fg_onnx.labels"
"""Model metadata: the class names as a JSON list, in output order."""
ALPHABET_KEY = "fg_onnx.alphabet"
"""Model metadata: a CTC recogniser's characters, as a JSON list or one string."""


def labels_of(metadata: dict[str, str], key: str = LABELS_KEY) -> list[str]:
    """The names a model's metadata holds under ``key`` (none when absent or damaged; a
    string is one name per character)."""
    try:
        labels = json.loads(metadata.get(key, "[]"))
    except json.JSONDecodeError:
        return []
    if isinstance(labels, str):
        return list(labels)
    return [str(v) for v in labels] if isinstance(labels, list) else []


class TargetError(FgOnnxError):
    """A target that cannot be explained (a label the model lacks, an empty mask, ...)."""


@dataclass(frozen=True)
class Target:
    """One explained quantity of one image: ⟨seed, explained tensor⟩."""

    seed: np.ndarray
    """Shaped like one sample of the explained tensor (no batch axis)."""
    fields: dict[str, object]
    """What its summary row adds (class, label, box, text, ...)."""
    box: Box | None = None
    """A box to draw on the overlay, in the model input's pixels."""
    region: np.ndarray | None = None
    """A bool mask to outline on the overlay, on the explained tensor's spatial grid."""


@dataclass(frozen=True)
class Picked:
    """An image's targets; ``note`` says why there are none (no detection above the
    threshold), which is a result, not an error."""

    targets: list[Target]
    note: str | None = None


@dataclass(frozen=True)
class Forward:
    """One image's clean forward pass."""

    explained: np.ndarray
    """The explained tensor's sample (no batch axis)."""
    outputs: dict[str, np.ndarray]
    """Every output the forward model has, by name, one sample each."""
    input_size: tuple[int, int]
    """(H, W) of the model input."""


@dataclass(frozen=True)
class TargetRequest:
    """What to explain in each image. Every task reads the options it has and ignores the
    others; boxes and masks are in the model input's pixels (the CLI converts the image's)."""

    target: int | None = None
    """A class index (classification, segmentation, detection: that class only), or an
    output element (scalar); None: the predicted class / the sum (scalar)."""
    label: str | None = None
    """A class by its name in ``labels``."""
    labels: Sequence[str] = ()
    top_k: int = 1
    threshold: float | None = None
    """Detection: the least class probability (default 0.25); segmentation of one
    probability map: the mask threshold (default 0.5)."""
    iou: float = 0.45
    """Detection: the NMS overlap."""
    box: Box | None = None
    mask: np.ndarray | None = None
    """Segmentation: a region of any size (resized, nearest; nonzero = inside)."""
    detection_format: str = "auto"
    box_format: str = "auto"
    """Detection, boxes beside the class scores (ssd, detr): xyxy, yxyx or cxcywh; auto:
    cxcywh for detr, for ssd xyxy unless the boxes are a Sigmoid's (cxcywh)."""
    box_scale: str = "auto"
    """pixels or normalised (fractions of the input); auto: normalised for detr, for ssd
    normalised where every coordinate is within ±2."""
    alphabet: Sequence[str] = ()
    blank: int = 0
    time_step: int | None = None
    reference: np.ndarray | None = None
    """Embedding: the reference vector."""
    similarity: str = "cosine"
    extra: dict[str, object] = field(default_factory=dict)

    def class_index(self) -> int | None:
        """The class ``target`` or ``label`` names, or None."""
        if self.label is None:
            return self.target
        if self.label not in self.labels:
            known = ", ".join(list(self.labels)[:8]) + (", ..." if len(self.labels) > 8 else "")
            raise TargetError(f"the model has no label {self.label!r}" + (
                f" (labels: {known})" if known else
                " (no labels: give --labels FILE, or the model's fg_onnx.labels metadata)"))
        return list(self.labels).index(self.label)


def label_of(labels: Sequence[str], index: int) -> str:
    """The name of class ``index``, or "" when the labels do not name it."""
    return labels[index] if 0 <= index < len(labels) else ""


def one_hot(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    """A float32 seed that picks one element."""
    seed = np.zeros(shape, np.float32)
    seed[index] = 1.0
    return seed
