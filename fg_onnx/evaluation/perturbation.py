"""How faithful a map is: the pixel-perturbation test, and RISE's deletion and insertion.

Pixel perturbation (FullGrad paper, section 5.1): replace the k % *least* salient pixels and
measure |f(x') − f(x)| / |f(x)| for the explained logit; a faithful map picks pixels the
model does not use, so lower is better. A removed pixel gets the image's own per-channel mean
(``fill=None``) or a given per-channel value (e.g. black).

Deletion and insertion as RISE defines them (Petsiuk et al., BMVC 2018), on the explained
class's probability p (the softmax of the explained scores; the sigmoid of a single one), in
equal steps up to all pixels, most salient first: deletion replaces them by the fill value
(a faithful map makes p fall fast: a lower area is better); insertion starts from a blurred
copy of the image and puts the original pixels back (p rises fast: a higher area is better).
Both curves, and so their areas over the fraction of pixels, lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from fg_onnx.choices import Layout
from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime.batching import chunks

DEFAULT_KS = (0.1, 0.3, 1.0, 3.0, 5.0, 10.0)
IMAGES_PER_CHUNK = 8
"""Images whose perturbed copies are built and scored together."""
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
"""The Gaussian blur of insertion's starting image (RISE's 11x11 kernel, σ = 5)."""

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
    first) to ``fill``, all K copies of a chunk of images scored as one batch."""
    flat = _channels_first(images.batch, images.layout)
    return _replaced_scores(scores, images, ranks, counts, flat, _fill_of(flat, fill),
                            most_first)


def _fill_of(flat: np.ndarray, fill: tuple[float, ...] | None) -> np.ndarray:
    """[N, C, 1]: each image's per-channel mean, or ``fill``."""
    if fill is None:
        return np.asarray(flat.mean(2, keepdims=True))
    value = np.asarray(fill, np.float32).reshape(1, -1, 1)
    return np.broadcast_to(value, (len(flat), flat.shape[1], 1))


def _replaced_scores(scores: Scores, images: Images, ranks: np.ndarray, counts: np.ndarray,
                     start: np.ndarray, other: np.ndarray, most_first: bool) -> np.ndarray:
    """[N, K]: the explained score of ``start`` ([N, C, P])
    with its counts[k] least (or most) salient pixels taken from ``other`` ([N, C, P] or
    [N, C, 1])."""
    pixels = ranks.shape[1]
    out = np.empty((len(ranks), len(counts)), np.float64)
    for part in chunks(len(ranks), IMAGES_PER_CHUNK):
        place = pixels - 1 - ranks[part] if most_first else ranks[part]
        mask = place[:, None, :] < counts[None, :, None]  # [n, K, P]
        copies = np.where(mask[:, :, None, :], other[part][:, None], start[part][:, None])
        logits = scores(_model_layout(copies, images.batch[part], images.layout))
        targets = np.repeat(images.targets[part], len(counts))
        out[part] = logits[np.arange(len(targets)), targets].reshape(-1, len(counts))
    return out


def class_probability(scores: Scores) -> Scores:
    """``scores`` turned into class probabilities: a softmax over the classes, or the
    sigmoid of a single score."""
    def probabilities(batch: np.ndarray) -> np.ndarray:
        logits = np.asarray(scores(batch), np.float64)
        if logits.shape[1] == 1:
            return np.asarray(1.0 / (1.0 + np.exp(-logits)))
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        return np.asarray(shifted / shifted.sum(1, keepdims=True))
    return probabilities


def blurred(batch: np.ndarray, layout: Layout) -> np.ndarray:
    """Each image of ``batch`` blurred (RISE's insertion start), in the model's layout."""
    channels_last = batch if layout == "nhwc" else batch.transpose(0, 2, 3, 1)
    out = np.empty_like(channels_last)
    for i, image in enumerate(channels_last):
        smooth = cv2.GaussianBlur(np.ascontiguousarray(image), (BLUR_KERNEL, BLUR_KERNEL),
                                  BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
        out[i] = smooth.reshape(image.shape)
    return out if layout == "nhwc" else out.transpose(0, 3, 1, 2)


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
    """[steps + 1] RISE deletion: mean over images of the class probability with the t most
    salient pixels replaced by the fill value, t = 0 .. all."""
    flat = _channels_first(images.batch, images.layout)
    return _probability_curve(scores, images, ranks, config, flat, _fill_of(flat, config.fill))


def insertion_curve(scores: Scores, images: Images, ranks: np.ndarray,
                    config: PerturbationConfig) -> np.ndarray:
    """[steps + 1] RISE insertion: mean over images of the class probability of the blurred
    image with its t most salient pixels put back, t = 0 .. all."""
    flat = _channels_first(images.batch, images.layout)
    start = _channels_first(blurred(images.batch, images.layout), images.layout)
    return _probability_curve(scores, images, ranks, config, start, flat)


def _probability_curve(scores: Scores, images: Images, ranks: np.ndarray,
                       config: PerturbationConfig, start: np.ndarray,
                       other: np.ndarray) -> np.ndarray:
    counts = np.round(config.fractions * ranks.shape[1]).astype(np.int64)
    after = _replaced_scores(class_probability(scores), images, ranks, counts, start, other,
                             most_first=True)
    return np.asarray(after.mean(0))


def area_under(curve: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal area under ``curve`` over ``x``."""
    return float(((curve[1:] + curve[:-1]) / 2 * np.diff(x)).sum())
