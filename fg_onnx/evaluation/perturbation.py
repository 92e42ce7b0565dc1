"""How faithful a map is: the pixel-perturbation test and a deletion curve.

Pixel perturbation (FullGrad paper, section 5.1): replace the k % *least* salient pixels and
measure |f(x') − f(x)| / |f(x)| for the explained logit; a faithful map picks pixels the
model does not use, so lower is better. Deletion (most salient first, in equal steps up to
all pixels): the explained logit normalised by its clean value, f(x_t) / f(x); a faithful map
makes it fall fast, so a lower area under the curve is better. A removed pixel gets the
image's own per-channel mean (``fill="mean"``) or a given per-channel value (e.g. black).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fg_onnx.choices import Layout
from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime.batching import chunks

DEFAULT_KS = (0.1, 0.3, 1.0, 3.0, 5.0, 10.0)
IMAGES_PER_CHUNK = 8
"""Images whose perturbed copies are built and scored together."""

Scores = Callable[[np.ndarray], np.ndarray]
"""Batch in the model's layout -> [N, classes] explained scores."""


@dataclass(frozen=True)
class PerturbationConfig:
    """What the tests remove and how."""

    ks: tuple[float, ...] = DEFAULT_KS
    """Percentages of pixels removed in the pixel-perturbation test."""
    deletion_steps: int = 20
    """Steps of the deletion curve (each removes 1/steps of the pixels)."""
    fill: tuple[float, ...] | None = None
    """Per-channel value of a removed pixel (model input space); None: the image's mean."""
    seed: int = 0
    """Seed of the random baseline and of tie-breaking."""

    def __post_init__(self) -> None:
        """One-line errors for settings that make no sense."""
        if not self.ks:
            raise FgOnnxError("give at least one k")
        bad = [k for k in self.ks if not 0 < k <= 100]
        if bad:
            raise FgOnnxError(f"k must be a percentage in (0, 100], got {bad[0]:g}")
        if self.deletion_steps < 1:
            raise FgOnnxError(f"--deletion-steps must be at least 1, got {self.deletion_steps}")

    @property
    def fractions(self) -> np.ndarray:
        """The deletion curve's x values: fraction of pixels removed, 0 .. 1."""
        return np.linspace(0.0, 1.0, self.deletion_steps + 1)


@dataclass(frozen=True)
class Images:
    """A batch with what the tests need to know about it."""

    batch: np.ndarray
    layout: Layout
    targets: np.ndarray
    """[N] explained class per image."""
    scores: np.ndarray
    """[N] explained logit of the clean image."""


def pixel_ranks(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N, H·W]: each pixel's place from least (0) to most salient. Ties go in random order:
    CAM maps have many exact zeros, and a fixed order would remove one corner first."""
    flat = np.nan_to_num(saliency.reshape(len(saliency), -1).astype(np.float64), nan=0.0)
    order = np.lexsort((rng.random(flat.shape), flat), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks


def _channels_first(batch: np.ndarray, layout: Layout) -> np.ndarray:
    x = batch if layout == "nchw" else batch.transpose(0, 3, 1, 2)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _model_layout(flat: np.ndarray, like: np.ndarray, layout: Layout) -> np.ndarray:
    if layout == "nchw":
        return flat.reshape(-1, *like.shape[1:])
    h, w, c = like.shape[1:]
    return flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1)


def removed_scores(scores: Scores, images: Images, ranks: np.ndarray, counts: np.ndarray,
                   fill: tuple[float, ...] | None, most_first: bool) -> np.ndarray:
    """[N, K]: the explained logit after removing counts[k] pixels (least or most salient
    first), all K copies of a chunk of images scored as one batch."""
    pixels = ranks.shape[1]
    out = np.empty((len(ranks), len(counts)), np.float64)
    for part in chunks(len(ranks), IMAGES_PER_CHUNK):
        x = _channels_first(images.batch[part], images.layout)  # [n, C, P]
        value = x.mean(2) if fill is None else np.broadcast_to(
            np.asarray(fill, np.float32), x.shape[:2])
        place = pixels - 1 - ranks[part] if most_first else ranks[part]
        mask = place[:, None, :] < counts[None, :, None]  # [n, K, P]
        copies = np.where(mask[:, :, None, :], value[:, None, :, None], x[:, None])
        logits = scores(_model_layout(copies, images.batch[part], images.layout))
        targets = np.repeat(images.targets[part], len(counts))
        out[part] = logits[np.arange(len(targets)), targets].reshape(-1, len(counts))
    return out


def pixel_perturbation(scores: Scores, images: Images, ranks: np.ndarray,
                       config: PerturbationConfig) -> np.ndarray:
    """[K] mean over images of |f(x') − f(x)| / |f(x)|, x' without the k % least salient."""
    pixels = ranks.shape[1]
    counts = np.array([max(1, round(k / 100 * pixels)) for k in config.ks])
    after = removed_scores(scores, images, ranks, counts, config.fill, most_first=False)
    base = images.scores[:, None].astype(np.float64)
    change = np.abs(after - base) / np.maximum(np.abs(base), 1e-6)
    return np.asarray(change.mean(0))


def deletion_curve(scores: Scores, images: Images, ranks: np.ndarray,
                   config: PerturbationConfig) -> np.ndarray:
    """[steps + 1] mean over images of f(x_t) / f(x), the most salient t removed first."""
    pixels = ranks.shape[1]
    counts = np.round(config.fractions[1:] * pixels).astype(np.int64)
    after = removed_scores(scores, images, ranks, counts, config.fill, most_first=True)
    base = images.scores[:, None].astype(np.float64)
    normalised = after / np.where(np.abs(base) < 1e-6, 1e-6, base)
    return np.concatenate([[1.0], normalised.mean(0)])


def area_under(curve: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal area under ``curve`` over ``x``."""
    return float(((curve[1:] + curve[:-1]) / 2 * np.diff(x)).sum())
