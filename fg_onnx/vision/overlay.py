"""Saliency heatmaps blended over images, and safe PNG writing."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from fg_onnx.errors import OutputExistsError
from fg_onnx.files import write_bytes_atomic
from fg_onnx.vision.masks import resize_mask


def colorize(saliency: npt.NDArray[np.floating], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """JET colours (RGB uint8, ``size`` = (height, width)) of a map with values in [0, 1].

    Values outside [0, 1] are clipped and non-finite ones count as 0, so a stray NaN cannot
    turn the whole picture into noise.
    """
    if saliency.ndim != 2 or 0 in saliency.shape:
        raise ValueError(f"saliency must be a non-empty 2-D map, got shape {saliency.shape}")
    values = resize_map(np.nan_to_num(saliency.astype(np.float32), nan=0.0, posinf=1.0,
                                      neginf=0.0), size)
    levels = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    coloured = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
    return np.ascontiguousarray(coloured[..., ::-1])


def resize_map(saliency: npt.NDArray[np.floating], size: tuple[int, int],
               ) -> npt.NDArray[np.float32]:
    """A 2-D map resized bilinearly to ``size`` = (height, width), as overlays draw it
    (float32; unchanged at that size already)."""
    values = np.asarray(saliency, np.float32)
    if values.shape == tuple(size):
        return values
    return np.asarray(cv2.resize(values, (size[1], size[0]), interpolation=cv2.INTER_LINEAR),
                      np.float32)


def overlay_heatmap(
    image: npt.NDArray[np.uint8], saliency: npt.NDArray[np.floating], alpha: float = 0.5
) -> npt.NDArray[np.uint8]:
    """Blends the JET-coloured ``saliency`` (HxW in [0, 1], any size) over an RGB uint8 image.

    Returns:
        RGB uint8 of the image's size: ``(1 - alpha) * image + alpha * heat``.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 HxWx3, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = colorize(saliency, (image.shape[0], image.shape[1]))
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike[str], rgb: npt.NDArray[np.uint8], *,
             overwrite: bool = True) -> None:
    """Writes an RGB (or grayscale) uint8 image as PNG, atomically.

    The data goes to a temporary file in the target directory, which then replaces ``path``,
    so readers never see a half-written PNG and an interrupted run leaves no broken file.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        FgOnnxError: the file cannot be written (missing folder, no space, ...).
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise OutputExistsError(f"refusing to overwrite existing file {target}")
    write_bytes_atomic(target, _encode_png(rgb))


def display_map(saliency: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """A map rescaled to [0, 1] for display (NaN/Inf shown as 0; a flat map as all 0)."""
    shown = np.where(np.isfinite(saliency), saliency, 0.0)
    low, high = float(shown.min()), float(shown.max())
    return (shown - low) / (high - low) if high > low else np.zeros_like(shown)


def _encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of an RGB HxWx3 or grayscale HxW uint8 array."""
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"PNG image must be uint8 HxW or HxWx3, got {rgb.dtype} {rgb.shape}")
    pixels = rgb if rgb.ndim == 2 else np.ascontiguousarray(rgb[..., ::-1])
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as PNG")
    return bytes(encoded.tobytes())


THUMBNAIL_SIDE = 160


def thumbnail_jpeg(rgb: npt.NDArray[np.uint8], side: int = THUMBNAIL_SIDE) -> bytes:
    """JPEG bytes of an RGB uint8 image shrunk to at most ``side`` pixels a side (for
    reports: a few kilobytes each)."""
    height, width = rgb.shape[:2]
    factor = min(1.0, side / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = rgb if factor == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(small[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as JPEG")
    return bytes(encoded.tobytes())


TARGET_COLOUR = (255, 255, 255)
"""Boxes and region outlines on overlays (RGB): white shows over every JET colour."""


def draw_target(rgb: npt.NDArray[np.uint8], box: tuple[float, float, float, float] | None,
                region: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.uint8]:
    """A copy of ``rgb`` with ``box`` (its pixels, corners) drawn and ``region`` (a mask of
    any size, resized nearest) outlined."""
    drawn = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(max(rgb.shape[:2]) / 200))
    if region is not None:
        mask = resize_mask(region, rgb.shape[:2]).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(drawn, contours, -1, TARGET_COLOUR, thickness)
    elif box is not None:
        corners = [round(v) for v in box]
        cv2.rectangle(drawn, (corners[0], corners[1]), (corners[2], corners[3]), TARGET_COLOUR,
                      thickness)
    return drawn
