"""Turning RGB uint8 images into a model's input tensor.

The transform is ``(pixel * scale - mean) / std`` per channel, after resizing to the model's
input size and before arranging the channels (RGB or BGR) and the layout (NCHW or NHWC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from fg_onnx.errors import FgOnnxError

Layout = Literal["nchw", "nhwc"]
Triple = tuple[float, float, float]

LAYOUTS: tuple[Layout, ...] = ("nchw", "nhwc")


@dataclass(frozen=True)
class _Normalisation:
    """The value part of a preset, in RGB channel order."""

    scale: float
    mean: Triple
    std: Triple


PRESETS: dict[str, _Normalisation] = {
    "imagenet": _Normalisation(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "zero-one": _Normalisation(1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "raw": _Normalisation(1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Known normalisations by name; the keys suit ``argparse`` choices."""


@dataclass(frozen=True)
class Preprocess:
    """How to build a model input from RGB uint8 images.

    Attributes:
        size: ``(height, width)`` every image is resized to (bilinear).
        mean: subtracted per channel, in the model's channel order (BGR when ``bgr``).
        std: divisor per channel, in the model's channel order.
        scale: applied to the 0..255 pixel values before ``mean`` and ``std``.
        bgr: the model expects channels in BGR order.
        layout: ``"nchw"`` or ``"nhwc"``.
    """

    size: tuple[int, int]
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    bgr: bool = False
    layout: Layout = "nchw"

    def __post_init__(self) -> None:
        """Rejects shapes and values that would silently produce garbage."""
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"preprocess size must be (height, width) >= 1, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("preprocess mean and std need one value per channel (3)")
        if any(s == 0 for s in self.std):
            raise ValueError(f"preprocess std must be non-zero, got {self.std}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"preprocess layout must be one of {LAYOUTS}, got {self.layout!r}")


def preset(
    name: str, size: tuple[int, int], *, bgr: bool = False, layout: Layout = "nchw"
) -> Preprocess:
    """The named preset (see ``PRESETS``) at ``size``; mean/std follow ``bgr``'s channel order.

    Raises:
        ValueError: unknown preset name.
    """
    try:
        norm = PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ValueError(f"unknown preprocessing preset {name!r} (known: {known})") from None
    mean, std = (_swap(norm.mean), _swap(norm.std)) if bgr else (norm.mean, norm.std)
    return Preprocess(size, mean, std, norm.scale, bgr, layout)


def _swap(values: Triple) -> Triple:
    """RGB-ordered per-channel values in BGR order (and back)."""
    return (values[2], values[1], values[0])


def _resize(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Bilinear resize to ``(height, width)``; a no-op at that size already."""
    if image.shape[:2] == size:
        return image
    return np.asarray(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))


def _check_image(index: int, image: np.ndarray) -> None:
    """Only RGB uint8 HxWx3 is accepted: anything else means a loader bug upstream."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index} must be RGB uint8 HxWx3, got {image.dtype} {image.shape}"
        )


def preprocess_batch(
    images: Sequence[npt.NDArray[np.uint8]], spec: Preprocess
) -> npt.NDArray[np.float32]:
    """Stacks RGB uint8 images into one float32 batch as ``spec`` describes.

    Returns:
        ``[N, 3, H, W]`` for layout ``"nchw"``, ``[N, H, W, 3]`` for ``"nhwc"``.

    Raises:
        ValueError: no images, or an image that is not RGB uint8 HxWx3.
    """
    if len(images) == 0:
        raise ValueError("preprocess_batch needs at least one image")
    for index, image in enumerate(images):
        _check_image(index, image)
    batch = np.stack([_resize(image, spec.size) for image in images]).astype(np.float32)
    if spec.bgr:
        batch = batch[..., ::-1]
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    batch = (batch * np.float32(spec.scale) - mean) / std
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


PREPROCESS_KEY = "fg_onnx.preprocess"
"""Model metadata naming the preset the model was trained with."""


class ModelFacts(Protocol):
    """What preprocessing reads off a model (a FullGrad session or an evaluation Scorer)."""

    metadata: dict[str, str]
    layout: str

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the model takes, when fixed."""


def model_preprocess(model: ModelFacts, *, size: tuple[int, int] | None = None,
                     preset_name: str | None = None, mean: Triple | None = None,
                     std: Triple | None = None, bgr: bool = False) -> Preprocess:
    """The model's preprocessing (its fixed size, its ``fg_onnx.preprocess`` preset, else
    imagenet), with any of the given values in its place; ``mean``/``std`` in RGB order.

    Raises:
        FgOnnxError: no size known, an unknown preset, or invalid values.
    """
    size = size or model.image_size
    if size is None:
        raise FgOnnxError("the model's input size is not fixed; pass --size HxW")
    name = preset_name or model.metadata.get(PREPROCESS_KEY, "imagenet")
    if name not in PRESETS:
        raise FgOnnxError(f"unknown preprocessing preset {name!r} in the model's metadata; "
                          "pass --preset")
    norm = PRESETS[name]
    mean, std = mean or norm.mean, std or norm.std
    if bgr:
        mean, std = _swap(mean), _swap(std)
    try:
        return Preprocess(size, mean, std, norm.scale, bgr, model.layout)  # type: ignore[arg-type]
    except ValueError as exc:
        raise FgOnnxError(str(exc)) from exc
