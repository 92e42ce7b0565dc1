"""The evaluation plot, drawn with OpenCV (no plotting library needed): pixel perturbation
against k (log axis), then RISE's deletion and insertion curves; its panels serve the sanity
checks' plot too."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from fg_onnx.evaluation.run import RANDOM, Evaluation

PANEL = (460, 340)  # width, height of one panel
MARGIN = (62, 20, 36, 46)  # left, right, top, bottom
FONT = cv2.FONT_HERSHEY_SIMPLEX
# tab10 colours, BGR; the random baseline is drawn in grey
COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (0, 0, 0)]
GREY = (150, 150, 150)
Axis = Callable[[float], int]


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.4,
          colour: tuple[int, int, int] = (40, 40, 40)) -> None:
    cv2.putText(image, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = max(high - low, 1e-12)
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]


def panel(title: str, xlabel: str, ylabel: str, xs: Sequence[float],
           series: list[tuple[str, list[float], tuple[int, int, int]]], xaxis: Axis,
           xticks: list[tuple[float, str]]) -> np.ndarray:
    width, height = PANEL
    left, right, top, bottom = MARGIN
    image = np.full((height, width, 3), 255, np.uint8)
    values = [v for _, ys, _ in series for v in ys if math.isfinite(v)]
    low, high = min([0.0, *values]), max([*values, 1e-6])
    high += 0.05 * (high - low)

    def y_of(v: float) -> int:
        return round(top + (height - top - bottom) * (high - v) / (high - low))

    for tick in _nice_ticks(low, high):
        y = y_of(tick)
        cv2.line(image, (left, y), (width - right, y), (232, 232, 232), 1)
        put_text(image, f"{tick:g}", (4, y + 4), 0.35)
    for value, label in xticks:
        x = xaxis(value)
        cv2.line(image, (x, height - bottom), (x, height - bottom + 4), (80, 80, 80), 1)
        put_text(image, label, (x - 8, height - bottom + 16), 0.35)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), (80, 80, 80), 1)
    for _, ys, colour in series:
        points = np.array([[xaxis(x), y_of(y)] for x, y in zip(xs, ys, strict=True)
                           if math.isfinite(y)], np.int32)
        cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
        for point in points:
            cv2.circle(image, tuple(int(v) for v in point), 3, colour, -1, cv2.LINE_AA)
    put_text(image, title, (left, 16), 0.5)
    put_text(image, xlabel, (left + 60, height - 8), 0.4)
    put_text(image, ylabel, (4, top - 4), 0.35)
    return image


def linear_axis(low: float, high: float) -> Axis:
    left, right = MARGIN[0], PANEL[0] - MARGIN[1]
    return lambda v: round(left + (right - left) * (v - low) / (high - low))


def _log(low: float, high: float) -> Axis:
    scale = linear_axis(math.log10(low), math.log10(high))
    return lambda v: scale(math.log10(v))


def legend_panel(series: list[tuple[str, list[float], tuple[int, int, int]]]) -> np.ndarray:
    width = 250
    image = np.full((PANEL[1], width, 3), 255, np.uint8)
    for i, (name, _, colour) in enumerate(series):
        y = MARGIN[2] + 10 + 22 * i
        cv2.line(image, (6, y), (30, y), colour, 2, cv2.LINE_AA)
        put_text(image, name, (36, y + 4))
    return image


def plot(evaluation: Evaluation) -> np.ndarray:
    """RGB uint8 image of both tests for every method."""
    rows = evaluation.results
    colours = iter(COLOURS)
    palette = [GREY if r.method == RANDOM else next(colours, (0, 0, 0)) for r in rows]
    ks = evaluation.ks
    pad = 1.4
    k_axis = _log(min(ks) / pad, max(ks) * pad)
    left = panel(
        "pixel perturbation (least salient removed)", "% pixels removed (log)",
        "mean |df| / |f|", ks,
        [(r.method, r.perturbation, c) for r, c in zip(rows, palette, strict=True)],
        k_axis, [(k, f"{k:g}") for k in ks])
    fractions = [100 * f for f in evaluation.fractions]
    ticks: list[tuple[float, str]] = [(v, f"{v:g}") for v in (0.0, 25.0, 50.0, 75.0, 100.0)]
    deletion = panel(
        "deletion (most salient removed first)", "% pixels removed", "p(class)",
        fractions, [(r.method, r.deletion, c) for r, c in zip(rows, palette, strict=True)],
        linear_axis(0, 100), ticks)
    insertion = panel(
        "insertion (most salient put back first)", "% pixels inserted", "p(class)",
        fractions, [(r.method, r.insertion, c) for r, c in zip(rows, palette, strict=True)],
        linear_axis(0, 100), ticks)
    legend = legend_panel([(f"{r.method}  del {r.deletion_auc:.2f} ins {r.insertion_auc:.2f}", [],
                       c) for r, c in zip(rows, palette, strict=True)])
    return np.ascontiguousarray(np.hstack([left, deletion, insertion, legend])[..., ::-1])
