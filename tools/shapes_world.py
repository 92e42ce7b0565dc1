"""The synthetic "shapes" world of the sample models, drawn with OpenCV: a filled circle,
square, triangle or cross of random size, position, rotation and colour on a two-colour
gradient with coarse texture and pixel noise, sometimes with a soft blob that belongs to no
class. tools/make_sample_model.py draws one shape per image (the classifier), and
tools/make_task_models.py draws scenes and rows of several (detector, segmenter, CTC reader)
with the same functions. Everything is deterministic for a given generator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "cross")
REFERENCE_SIZE = 64
"""The image side that shape sizes are given for (the classifier's input): a drawing at
another size scales them."""
SUPERSAMPLE = 4  # shapes are drawn at 4x and reduced with INTER_AREA, so edges are antialiased
CIRCLE_SCALE = 0.8
"""A circle's radius relative to the circumradius of the polygons (similar areas)."""


def background(rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """A two-colour linear gradient with low-frequency texture, float32 HxWx3 in 0..255
    (square when ``width`` is None)."""
    width = height if width is None else width
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / (height - 1), xx / (width - 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)
    image = c0 + t[..., None] * (c1 - c0)
    coarse = rng.normal(0, 18, (6, 6, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return (image + texture).astype(np.float32)


def shape_polygon(label: str, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Vertices (Nx2, x and y) of a square, triangle or cross of circumradius ``radius``."""
    if label == "square":
        unit = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64) / np.sqrt(2)
    elif label == "triangle":
        turns = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        unit = np.stack([np.cos(turns), -np.sin(turns)], axis=1)
    else:
        a, b = 1.0, 0.32  # arm length and half-width relative to the radius
        unit = np.array(
            [[b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b],
             [-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b]], np.float64,
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return centre + radius * unit @ rot.T


def contrasting_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A colour far enough from the mean colour of ``behind`` to stay visible."""
    mean = behind.reshape(-1, 3).mean(axis=0)
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - mean) > 110:
            return colour


def shape_coverage(label: str, centre: np.ndarray, radius: float, angle: float,
                   size: tuple[int, int]) -> np.ndarray:
    """Antialiased coverage (float32 HxW in [0, 1], ``size`` = (H, W)) of one shape with
    ``centre`` (x, y) and circumradius ``radius`` in the image's pixels (a circle ignores
    ``angle``)."""
    height, width = size
    big_centre, big_radius = centre * SUPERSAMPLE, radius * SUPERSAMPLE
    mask = np.zeros((height * SUPERSAMPLE, width * SUPERSAMPLE), np.uint8)
    if label == "circle":
        cx, cy = np.round(big_centre).astype(int)
        cv2.circle(mask, (int(cx), int(cy)), int(big_radius * CIRCLE_SCALE), 255, -1,
                   cv2.LINE_AA)
    else:
        points = shape_polygon(label, big_centre, big_radius, angle)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255, cv2.LINE_AA)
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA).astype(
        np.float32) / 255


def _random_coverage(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The coverage of one shape of random size, position and rotation in a square image."""
    big = size * SUPERSAMPLE
    radius = rng.uniform(10, 22) * (big / REFERENCE_SIZE)
    margin = radius * 1.05
    centre = rng.uniform(margin, big - margin, 2)
    angle = 0.0 if label == "circle" else rng.uniform(0, 2 * np.pi)
    # Drawn from the supersampled coordinates, so the random draws stay those of the first
    # sample model's generator (its images and masks are byte for byte the same).
    return shape_coverage(label, centre / SUPERSAMPLE, radius / SUPERSAMPLE, angle,
                          (size, size))


def distractor_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A small blurred ellipse: clutter that belongs to no class."""
    scale = size / REFERENCE_SIZE
    mask = np.zeros((size, size), np.float32)
    centre = tuple(int(v) for v in rng.uniform(4 * scale, size - 4 * scale, 2))
    axes = tuple(int(v) for v in rng.uniform(2, 5, 2) * scale)
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 1.2 * scale)


def paint(image: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``image`` (float HxWx3) with ``colour`` blended in where ``coverage`` (HxW) is."""
    cover = coverage[..., None]
    return np.asarray(image * (1 - cover) + colour * cover)


def finish(image: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """RGB uint8: ``image`` plus the pixel noise, rounded and clipped."""
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


def pixel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """The noise added last to every image."""
    return rng.normal(0, 6, shape)


@dataclass
class Drawing:
    """The parts of one rendered image, so that variants (no shape, a flat background) can be
    composed from the same draw."""

    background: np.ndarray
    """float32 HxWx3 in 0..255: the gradient, texture and distractor, without the shape."""
    colour: np.ndarray
    """[3]: the shape's colour."""
    coverage: np.ndarray
    """float32 HxW in [0, 1]: the shape's antialiased coverage."""
    noise: np.ndarray
    """float HxWx3: the pixel noise added last."""

    def compose(self, background: np.ndarray | None = None, shape: bool = True) -> np.ndarray:
        """RGB uint8: the shape over ``background`` (default: its own), with the noise."""
        image = self.background if background is None else background
        if shape:
            image = paint(image, self.coverage, self.colour)
        return finish(image, self.noise)

    @property
    def mask(self) -> np.ndarray:
        """bool HxW: the pixels the shape covers at least half."""
        return self.coverage >= 0.5


def draw(label: str, rng: np.random.Generator, size: int, distractor: bool) -> Drawing:
    """The parts of one image of ``label`` at ``size`` x ``size`` (see :func:`render`)."""
    image = background(rng, size)
    if distractor:
        image = paint(image, distractor_mask(rng, size), rng.uniform(0, 255, 3))
    coverage = _random_coverage(label, rng, size)
    colour = contrasting_colour(rng, image)
    return Drawing(image.astype(np.float32), colour, coverage, pixel_noise(rng, image.shape))


def render(label: str, rng: np.random.Generator, size: int, distractor: bool) -> np.ndarray:
    """One RGB uint8 image of ``label`` at ``size`` x ``size``."""
    return draw(label, rng, size, distractor).compose()


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Compression artefacts like those of the JPEG samples."""
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
