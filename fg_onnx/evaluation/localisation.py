"""Does a map point at the object? Localisation metrics against ground-truth masks.

For one map M (saliency, the map's pixels) and a binary mask B of the same size:
- pointing game (Zhang et al., 2016): 1 when the map's maximum lies in B, else 0;
- relevance mass accuracy (Arras et al., 2022): Σ_{B} M⁺ / Σ M⁺, the share of the positive
  relevance inside the mask;
- relevance rank accuracy (Arras et al., 2022): of the |B| most salient pixels, the share
  inside B;
- mask AUC: the ROC AUC of M as a detector of B's pixels (1: every mask pixel is more
  salient than every other, 0.5: chance).
Each is averaged over the images that have a non-empty mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fg_onnx.vision.masks import resize_mask

METRICS = ("pointing_game", "relevance_mass", "relevance_rank", "mask_auc")


@dataclass(frozen=True)
class Localisation:
    """The metrics of one method, averaged over ``images`` masked images."""

    pointing_game: float
    relevance_mass: float
    relevance_rank: float
    mask_auc: float
    images: int


def image_metrics(saliency: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float]:
    """The four metrics of one [H, W] map and a non-empty bool mask of its size."""
    values = np.nan_to_num(saliency.astype(np.float64).ravel(), nan=0.0)
    inside = mask.ravel()
    count = int(inside.sum())
    pointing = float(inside[int(np.argmax(values))])
    positive = np.maximum(values, 0.0)
    mass = float(positive[inside].sum() / positive.sum()) if positive.sum() > 0 else 0.0
    top = np.argsort(-values, kind="stable")[:count]
    rank = float(inside[top].mean())
    return pointing, mass, rank, _roc_auc(values, inside)


def _roc_auc(values: np.ndarray, positive: np.ndarray) -> float:
    """The Mann-Whitney estimate of P(value of a positive > value of a negative), ties
    counting one half; 0.5 where every pixel is positive."""
    positives = int(positive.sum())
    negatives = positive.size - positives
    if negatives == 0:
        return 0.5
    # 1-based ranks, tied values sharing the mean of theirs (CAM maps have many zeros)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    total = ranks[positive].sum() - positives * (positives + 1) / 2
    return float(total / (positives * negatives))


def localisation(maps: np.ndarray, masks: Sequence[np.ndarray | None]) -> Localisation | None:
    """The metrics averaged over the images whose mask is given and not empty (masks of
    another size are resized, nearest); None when no image has one."""
    rows = []
    for saliency, mask in zip(maps, masks, strict=True):
        if mask is None:
            continue
        fitted = resize_mask(mask, saliency.shape)
        if fitted.any():
            rows.append(image_metrics(saliency, fitted))
    if not rows:
        return None
    pointing, mass, rank, auc = (float(v) for v in np.mean(np.asarray(rows), axis=0))
    return Localisation(pointing, mass, rank, auc, images=len(rows))
