"""Segmentation targets: the sum of one class's logits over a region of the output grid,
for [C, H, W] class maps and for one-channel probability maps (text detectors)."""

from __future__ import annotations

import cv2
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
from fg_onnx.vision.masks import resize_mask

MASK_THRESHOLD = 0.5
"""A one-channel probability map's default mask threshold."""


def segmentation_targets(forward: Forward, request: TargetRequest,
                         probabilities: np.ndarray | None = None) -> Picked:
    """Regions: ``request.mask``, ``request.box``, or the predicted mask of each of the
    ``top_k`` largest classes (class 0 is the background where there are several); for a
    one-channel map, the ``top_k`` largest connected components of ``probabilities`` (the
    model's output) above ``request.threshold``."""
    logits = forward.explained
    if logits.ndim != 3:
        raise TargetError(f"segmentation explains [N, C, H, W] outputs; this one is "
                          f"[N, {', '.join(map(str, logits.shape))}]")
    channels, height, width = logits.shape
    given = _given_region(request, (height, width), forward.input_size)
    chosen = request.class_index()
    if chosen is not None and not 0 <= chosen < channels:
        raise TargetError(f"class {chosen} is out of range: the model has {channels} classes "
                          f"(0..{channels - 1})")
    if channels == 1:
        regions = [given] if given is not None else _components(
            probabilities if probabilities is not None else logits, request)
        if not regions:
            return Picked([], f"no region above the threshold {_threshold(request):g}")
        return Picked([_target(0, 1, region, request, forward.input_size)
                       for region in regions])
    predicted = logits.argmax(0)
    if given is not None:
        inside = np.bincount(predicted[given], minlength=channels)
        if chosen is None:
            chosen = int(inside[1:].argmax()) + 1 if inside[1:].any() else 0
        return Picked([_target(chosen, channels, given, request, forward.input_size)])
    counts = np.bincount(predicted.reshape(-1), minlength=channels)
    by_size = np.argsort(-counts[1:], kind="stable")[:request.top_k] + 1
    classes = [chosen] if chosen is not None else [int(c) for c in by_size if counts[c] > 0]
    class_regions = [(c, predicted == c) for c in classes]
    class_regions = [(c, region) for c, region in class_regions if region.any()]
    if not class_regions:
        named = f"class {chosen}" if chosen is not None else "any class but the background"
        return Picked([], f"no pixel is predicted as {named}")
    return Picked([_target(c, channels, region, request, forward.input_size)
                   for c, region in class_regions])


def _given_region(request: TargetRequest, grid: tuple[int, int],
                  input_size: tuple[int, int]) -> np.ndarray | None:
    """The user's mask or box on the output grid, or None; an empty one is refused."""
    if request.mask is not None:
        mask = np.asarray(request.mask)
        mask = mask.reshape(mask.shape[:2]) if mask.ndim == 3 else mask
        if mask.ndim != 2:
            raise TargetError(f"a mask is one image; got an array of shape {mask.shape}")
        region = resize_mask(mask, grid)
        if not region.any():
            raise TargetError("the mask is empty (no nonzero pixel at the output's size)")
        return np.asarray(region)
    if request.box is not None:
        return box_region(request.box, grid, input_size)
    return None


def box_region(box: Box, grid: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The output-grid cells whose centres lie in ``box`` (model input pixels)."""
    scale_y, scale_x = grid[0] / input_size[0], grid[1] / input_size[1]
    ys = (np.arange(grid[0]) + 0.5) / scale_y
    xs = (np.arange(grid[1]) + 0.5) / scale_x
    region = ((ys[:, None] >= box[1]) & (ys[:, None] <= box[3])
              & (xs[None, :] >= box[0]) & (xs[None, :] <= box[2]))
    if not region.any():
        raise TargetError(f"the box {list(box)} covers no pixel of the "
                          f"{input_size[1]}x{input_size[0]} input")
    return np.asarray(region)


def _threshold(request: TargetRequest) -> float:
    return MASK_THRESHOLD if request.threshold is None else request.threshold


def _components(values: np.ndarray, request: TargetRequest) -> list[np.ndarray]:
    """The ``top_k`` largest connected components above the threshold, largest first."""
    above = (values.reshape(values.shape[-2:]) > _threshold(request)).astype(np.uint8)
    count, labels = cv2.connectedComponents(above, connectivity=8)
    sizes = np.bincount(labels.reshape(-1), minlength=count)[1:]
    order = np.argsort(-sizes, kind="stable")[:request.top_k] + 1
    return [np.asarray(labels == k) for k in order]


def _target(channel: int, channels: int, region: np.ndarray, request: TargetRequest,
            input_size: tuple[int, int]) -> Target:
    """Σ of ``channel``'s logits over ``region``: the region as a seed in that channel."""
    grid = region.shape
    seed = np.zeros((channels, *grid), np.float32)
    seed[channel] = region
    ys, xs = np.nonzero(region)
    scale_y, scale_x = input_size[0] / grid[0], input_size[1] / grid[1]
    box = (float(xs.min() * scale_x), float(ys.min() * scale_y),
           float((xs.max() + 1) * scale_x), float((ys.max() + 1) * scale_y))
    return Target(seed, {
        "target": channel, "target_label": label_of(request.labels, channel),
        "box": [round(v, 2) for v in box], "pixels": int(region.sum())}, box=box,
        region=region)
