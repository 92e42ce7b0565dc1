"""The sanity checks as JSON, a markdown table, a plot of the curves and an image grid."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import cv2
import numpy as np

from fg_onnx.evaluation.plot import COLOURS, legend_panel, linear_axis, panel, put_text
from fg_onnx.evaluation.sanity import Sanity, SanityStep, Similarity, unit_range
from fg_onnx.vision.overlay import colorize

CELL = 96
"""Side of one map in the grid, in pixels."""


def _similarity(found: Similarity) -> dict[str, float | None]:
    return dataclasses.asdict(found)


def to_json(sanity: Sanity) -> str:
    """Per method and step: ``spearman_abs``, ``spearman`` (null for unsigned maps), ``ssim``."""
    def steps(rows: list[SanityStep], method: str) -> list[dict[str, Any]]:
        return [{"randomised": row.randomised, **_similarity(row.similarity[method])}
                for row in rows]

    document = {
        "images": sanity.images,
        "layers": [dataclasses.asdict(layer) for layer in sanity.layers],
        "methods": {
            method: {
                "cascading": steps(sanity.cascading, method),
                "independent": steps(sanity.independent, method),
                "random_logit": (_similarity(sanity.random_logit[method])
                                 if method in sanity.random_logit else None),
            } for method in sanity.methods
        },
    }
    return json.dumps(document, indent=2)


def markdown(sanity: Sanity) -> str:
    """Two tables of Spearman |map| (SSIM) per method and step, and the random-logit test."""
    def table(title: str, rows: list[SanityStep], heading: list[str]) -> list[str]:
        lines = [f"### {title}", "", "| method | " + " | ".join(heading) + " |",
                 "| --- " * (len(heading) + 1) + "|"]
        for method in sanity.methods:
            cells = [f"{s.similarity[method].spearman_abs:.2f} ({s.similarity[method].ssim:.2f})"
                     for s in rows]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return [*lines, ""]

    depth = [f"to {row.randomised[0]}" for row in sanity.cascading]
    lines = [*table("Cascading randomisation (output layer first)", sanity.cascading, depth),
             *table("Independent randomisation (one layer)", sanity.independent,
                    [row.randomised[0] for row in sanity.independent])]
    if sanity.random_logit:
        lines += ["### Random logit", "", "| method | Spearman |map| | SSIM |",
                  "| --- | --- | --- |"]
        lines += [f"| {m} | {s.spearman_abs:.2f} | {s.ssim:.2f} |"
                  for m, s in sanity.random_logit.items()]
        lines.append("")
    lines.append(
        f"{sanity.images} images. Cells: Spearman rank correlation of |map| with the original "
        "model's map (SSIM in brackets), averaged over the images; a map that reflects the "
        "weights falls towards 0 as they are randomised. Random logit: the map of a random "
        "other class against the explained class's (lower: the map depends on the class).")
    return "\n".join(lines) + "\n"


def plot(sanity: Sanity) -> np.ndarray:
    """RGB uint8: Spearman |map| against the cascading randomisation depth, per method."""
    depth = [float(i) for i in range(len(sanity.cascading) + 1)]
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(sanity.methods))]
    series = [(m, [1.0, *(s.similarity[m].spearman_abs for s in sanity.cascading)], c)
              for m, c in zip(sanity.methods, colours, strict=True)]
    ticks = [(d, f"{int(d)}") for d in depth]
    curves = panel("cascading randomisation (output layer first)", "layers randomised",
                   "Spearman |map|", depth, series, linear_axis(0.0, max(depth[-1], 1.0)),
                   ticks)
    ssim_series = [(m, [1.0, *(s.similarity[m].ssim for s in sanity.cascading)], c)
                   for m, c in zip(sanity.methods, colours, strict=True)]
    ssims = panel("cascading randomisation", "layers randomised", "SSIM", depth, ssim_series,
                  linear_axis(0.0, max(depth[-1], 1.0)), ticks)
    legend = legend_panel(series)
    return np.ascontiguousarray(np.hstack([curves, ssims, legend])[..., ::-1])


def grid(sanity: Sanity) -> np.ndarray:
    """RGB uint8 like the paper's figure: rows methods, columns the original map then each
    cascading depth, for the first image (each map scaled to its own range)."""
    columns = ["original", *(row.randomised[0] for row in sanity.cascading)]
    label_width, header = 120, 30
    width = label_width + CELL * len(columns)
    image = np.full((header + CELL * len(sanity.methods), width, 3), 255, np.uint8)
    for j, name in enumerate(columns):
        put_text(image, _short(name), (label_width + j * CELL + 2, header - 8), 0.3)
    for i, method in enumerate(sanity.methods):
        top = header + i * CELL
        put_text(image, method, (4, top + CELL // 2), 0.4)
        for j, saliency in enumerate(sanity.maps[method]):
            left = label_width + j * CELL
            image[top:top + CELL, left:left + CELL] = colorize(unit_range(saliency), (CELL, CELL))[
                ..., ::-1]
            cv2.rectangle(image, (left, top), (left + CELL - 1, top + CELL - 1), (255, 255, 255))
    return np.ascontiguousarray(image[..., ::-1])


def _short(name: str) -> str:
    tail = name.rstrip("/").split("/")[-2:]
    return "/".join(tail)[-16:]
