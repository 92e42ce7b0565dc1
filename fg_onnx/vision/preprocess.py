"""Turning RGB uint8 images into a model's input tensor.

The transform is ``(pixel * scale - mean) / std`` per channel, after resizing to the model's
input size and before arranging the channels (RGB or BGR) and the layout (NCHW or NHWC).
Models with one input channel get grayscale images (OpenCV's RGB to gray weights, ITU-R
BT.601) and one mean and std: a preset's are the averages of its three values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from fg_onnx.choices import LAYOUTS, Layout
from fg_onnx.errors import FgOnnxError

Triple = tuple[float, float, float]
Values = tuple[float, ...]
"""Per-channel values: one per channel, or one for every channel."""

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
        mean: subtracted per channel, in the model's channel order (BGR when ``bgr``); one
            value stands for every channel (stored as ``channels`` values).
        std: divisor per channel, in the model's channel order; one value as for ``mean``.
        scale: applied to the 0..255 pixel values before ``mean`` and ``std``.
        bgr: the model expects channels in BGR order (no effect on one channel).
        layout: ``"nchw"`` or ``"nhwc"``.
        channels: 3 (RGB) or 1 (the images converted to grayscale).
    """

    size: tuple[int, int]
    mean: Values = (0.0,)
    std: Values = (1.0,)
    scale: float = 1 / 255
    bgr: bool = False
    layout: Layout = "nchw"
    channels: int = 3

    def __post_init__(self) -> None:
        """Rejects shapes and values that would silently produce garbage; one mean or std
        value becomes one per channel."""
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"preprocess size must be (height, width) >= 1, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"preprocess channels must be 1 (grayscale) or 3 (RGB), got "
                             f"{self.channels}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) not in (1, self.channels):
                raise ValueError(f"preprocess {name} needs one value per channel "
                                 f"({self.channels}) or one for all, got {len(values)}")
            # Frozen: the dataclass's own way to normalise a field in __post_init__.
            object.__setattr__(self, name, values * (self.channels // len(values)))
        if any(s == 0 for s in self.std):
            raise ValueError(f"preprocess std must be non-zero, got {self.std}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"preprocess layout must be one of {LAYOUTS}, got {self.layout!r}")


def preset(
    name: str, size: tuple[int, int], *, bgr: bool = False, layout: Layout = "nchw",
    channels: int = 3,
) -> Preprocess:
    """The named preset (see ``PRESETS``) at ``size``; mean/std follow ``bgr``'s channel order.
    For ``channels=1`` (grayscale) mean and std are the averages of the preset's three values
    (imagenet: 0.449 and 0.226).

    Raises:
        ValueError: unknown preset name, or channels other than 1 or 3.
    """
    try:
        norm = PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ValueError(f"unknown preprocessing preset {name!r} (known: {known})") from None
    mean, std = _preset_values(norm, channels)
    if bgr:
        mean, std = _swap(mean), _swap(std)
    return Preprocess(size, mean, std, norm.scale, bgr, layout, channels)


def _preset_values(norm: _Normalisation, channels: int) -> tuple[Values, Values]:
    """A preset's mean and std for ``channels`` input channels, RGB order."""
    if channels != 1:
        return norm.mean, norm.std
    return (sum(norm.mean) / 3,), (sum(norm.std) / 3,)


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _swap(values: Values) -> Values:
    """RGB-ordered per-channel values in BGR order (and back); one value stays."""
    return tuple(reversed(values))


def _resize(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Bilinear resize to ``(height, width)``; a no-op at that size already."""
    if image.shape[:2] == size:
        return image
    return np.asarray(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))


def _to_gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """HxW luma of an RGB image; a grayscale file's three equal channels give its own values
    back (OpenCV's fixed-point weights sum to exactly one)."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))


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
        ``[N, C, H, W]`` for layout ``"nchw"``, ``[N, H, W, C]`` for ``"nhwc"``, with
        ``C = spec.channels`` (1: the images in grayscale).

    Raises:
        ValueError: no images, or an image that is not RGB uint8 HxWx3.
    """
    if len(images) == 0:
        raise ValueError("preprocess_batch needs at least one image")
    for index, image in enumerate(images):
        _check_image(index, image)
    if spec.channels == 1:
        # Gray before resizing: a third of the pixels to interpolate.
        gray = [_resize(_to_gray(image), spec.size) for image in images]
        batch = np.stack(gray)[..., None].astype(np.float32)
    else:
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
    layout: Layout

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the model takes, when fixed."""

    @property
    def channels(self) -> int | None:
        """Number of input channels, when fixed."""


def model_preprocess(model: ModelFacts, *, size: tuple[int, int] | None = None,
                     preset_name: str | None = None, mean: Values | None = None,
                     std: Values | None = None, bgr: bool = False) -> Preprocess:
    """The model's preprocessing (its fixed size, its ``fg_onnx.preprocess`` preset, else
    imagenet), with any of the given values in its place; ``mean``/``std`` in RGB order, one
    value per channel or one for all.

    A model with one input channel gets grayscale images and the preset's averaged values
    (see :func:`preset`); three ``mean``/``std`` values are refused there, as they name
    colour channels the model does not have. A channel count that is not fixed counts as 3.

    Raises:
        FgOnnxError: no size known, a ``size`` the model's fixed size contradicts, an
            unknown preset, a model that takes neither 1 nor 3
            channels, or invalid values.
    """
    fixed = model.image_size
    if size is not None and fixed is not None and tuple(size) != fixed:
        # onnxruntime would refuse the batch with an INVALID_ARGUMENT naming no option.
        raise FgOnnxError(f"the model takes {_hw(fixed)} inputs (its input size, or "
                          f"--input-size), but --size resizes the images to {_hw(size)}: "
                          f"drop --size or pass --size {_hw(fixed)}")
    size = size or fixed
    if size is None:
        raise FgOnnxError("the model's input size is not fixed; pass --size HxW")
    channels = model.channels or 3
    if channels not in (1, 3):
        raise FgOnnxError(f"the model's input has {channels} channels; images can be fed as "
                          "3 (RGB) or 1 (grayscale)")
    for option, values in (("--mean", mean), ("--std", std)):
        if channels == 1 and values is not None and len(values) != 1:
            raise FgOnnxError(f"the model takes 1-channel (grayscale) images: give {option} "
                              f"one value, not {len(values)}")
    name = preset_name or model.metadata.get(PREPROCESS_KEY, "imagenet")
    if name not in PRESETS:
        raise FgOnnxError(f"unknown preprocessing preset {name!r} in the model's metadata; "
                          "pass --preset")
    norm = PRESETS[name]
    preset_mean, preset_std = _preset_values(norm, channels)
    mean, std = mean or preset_mean, std or preset_std
    if bgr:
        mean, std = _swap(mean), _swap(std)
    try:
        return Preprocess(size, mean, std, norm.scale, bgr, model.layout,
                          channels)
    except ValueError as exc:
        raise FgOnnxError(str(exc)) from exc
