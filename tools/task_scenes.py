"""Scenes of several shapes for the task sample models (tools/make_task_models.py): a square
scene of 2-4 shapes that do not touch (the detector and the segmenter), and a row of 3-6
shapes read left to right (the CTC reader), drawn with tools/shapes_world.py. Torch-free, so
the tests can draw the truth of the shipped images again.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from shapes_world import (
    CLASSES,
    background,
    contrasting_colour,
    distractor_mask,
    finish,
    paint,
    pixel_noise,
    shape_coverage,
)

SCENE_SIZE = 96
"""The detector's and the segmenter's input side; scenes are drawn for it (or a multiple)."""
SCENE_COUNTS = (2, 4)
SCENE_RADII = (9.0, 17.0)
"""Circumradius range of a scene's shapes at SCENE_SIZE."""
ROW_SIZE = (32, 192)
"""The reader's input (H, W)."""
ROW_COUNTS = (3, 6)
ROW_RADII = (8.0, 10.5)
ROW_MIN_GAP = 4.0
"""Pixels at least between two neighbours of a row (at ROW_SIZE), so that a repeated
character has a blank between its two."""
ALPHABET = "cstx"
"""One letter per class of CLASSES: circle, square, triangle, cross."""


@dataclass(frozen=True)
class Placed:
    """One drawn shape."""

    label: int
    """Index into CLASSES."""
    coverage: np.ndarray
    """float32 HxW in [0, 1] at the image's size."""

    def box(self, scale: float = 1.0) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of the pixels the shape covers at least half, times ``scale``."""
        ys, xs = np.nonzero(self.coverage >= 0.5)
        return (float(xs.min()) * scale, float(ys.min()) * scale,
                float(xs.max() + 1) * scale, float(ys.max() + 1) * scale)


@dataclass(frozen=True)
class Scene:
    """An RGB uint8 image and its shapes (a row: left to right)."""

    image: np.ndarray
    shapes: list[Placed]

    def label_map(self, size: tuple[int, int]) -> np.ndarray:
        """int64 (H, W) at ``size``: 0 background, 1 + the class where a shape covers at
        least half the pixel (coverage averaged to that size)."""
        labels = np.zeros(size, np.int64)
        for shape in self.shapes:
            small = cv2.resize(shape.coverage, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            labels[small >= 0.5] = shape.label + 1
        return labels

    @property
    def text(self) -> str:
        """A row's characters, left to right."""
        return "".join(ALPHABET[shape.label] for shape in self.shapes)


def _compose(rng: np.random.Generator, size: tuple[int, int],
             shapes: list[tuple[int, np.ndarray, float]], distractor: bool) -> Scene:
    """Background, maybe a blob, then each (label, centre, radius) shape in its own colour."""
    image = background(rng, *size)
    if distractor:
        side = min(size)
        blob = np.zeros(size, np.float32)
        y, x = (int(v) for v in rng.integers(0, np.array(size) - side + 1))
        blob[y:y + side, x:x + side] = distractor_mask(rng, side)
        image = paint(image, blob, rng.uniform(0, 255, 3))
    placed = []
    for label, centre, radius in shapes:
        angle = 0.0 if CLASSES[label] == "circle" else float(rng.uniform(0, 2 * np.pi))
        coverage = shape_coverage(CLASSES[label], centre, radius, angle, size)
        image = paint(image, coverage, contrasting_colour(rng, image))
        placed.append(Placed(label, coverage))
    return Scene(finish(image, pixel_noise(rng, image.shape)), placed)


def scene(rng: np.random.Generator, side: int = SCENE_SIZE) -> Scene:
    """2-4 shapes of random class, size and place that do not touch, at ``side`` pixels (a
    multiple of SCENE_SIZE draws the same kind of scene larger)."""
    scale = side / SCENE_SIZE
    count = int(rng.integers(SCENE_COUNTS[0], SCENE_COUNTS[1] + 1))
    while True:
        shapes: list[tuple[int, np.ndarray, float]] = []
        for _ in range(count * 30):
            radius = float(rng.uniform(*SCENE_RADII)) * scale
            centre = rng.uniform(radius * 1.05, side - radius * 1.05, 2)
            if all(np.linalg.norm(centre - c) > radius + r + 2 * scale for _, c, r in shapes):
                shapes.append((int(rng.integers(len(CLASSES))), centre, radius))
                if len(shapes) == count:
                    return _compose(rng, (side, side), shapes, bool(rng.random() < 0.5))


def row(rng: np.random.Generator, scale: int = 1) -> Scene:
    """3-6 shapes of random class side by side, at ``scale`` times ROW_SIZE: gaps of at
    least ROW_MIN_GAP, the rest of the width shared out at random."""
    height, width = ROW_SIZE[0] * scale, ROW_SIZE[1] * scale
    count = int(rng.integers(ROW_COUNTS[0], ROW_COUNTS[1] + 1))
    radii = rng.uniform(*ROW_RADII, count) * scale
    spare = width - 2 * radii.sum() * 1.05 - (count + 1) * ROW_MIN_GAP * scale
    gaps = ROW_MIN_GAP * scale + spare * rng.dirichlet(np.ones(count + 1))
    left = gaps[0]
    shapes: list[tuple[int, np.ndarray, float]] = []
    for k in range(count):
        x = left + radii[k] * 1.05
        y = height / 2 + rng.uniform(-1.5, 1.5) * scale
        shapes.append((int(rng.integers(len(CLASSES))), np.array([x, y]), float(radii[k])))
        left = x + radii[k] * 1.05 + gaps[k + 1]
    return _compose(rng, (height, width), shapes, bool(rng.random() < 0.5))

