"""A batch of images' targets explained and written as ``fg-onnx explain`` writes them: one
summary row, overlay and map per target (``<stem>_t<k>_<method>.png``), a row with a note for
an image without any. The one code path of the local run and of the Ray actors
(``fg_onnx.ray``), so that both write the same files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fg_onnx.choices import spatial_axes
from fg_onnx.files import FileOutputs, outputs_of, save_npy_atomic
from fg_onnx.summary import Row, target_row
from fg_onnx.targets.base import Box, TargetRequest
from fg_onnx.targets.run import ImageTargets, TargetExplainer, TargetResult
from fg_onnx.vision.overlay import (
    display_map,
    draw_target,
    overlay_heatmap,
    resize_map,
    save_png,
    thumbnail_jpeg,
)
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch

Loaded = tuple[Path, str, np.ndarray | str]
"""An image, its output stem, and its pixels or why it could not be read."""


@dataclass(frozen=True)
class ImageRows:
    """What ``explain`` has for one image's targets: its summary rows (one with a ``note``
    when it has no target, none when it was skipped), the thumbnail report.html shows
    beside each row, and the lines to print on stderr (without the ``fg-onnx:`` prefix),
    whichever engine ran."""

    rows: list[Row]
    thumbnail: bytes
    messages: list[str]
    skipped: bool = False


def target_stem(stem: str, index: int) -> str:
    """The output stem of an image's ``index``-th target."""
    return f"{stem}_t{index}"


def _scale(image_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, float]:
    """(x, y) factors from the model input's pixels to the image's."""
    return image_size[1] / input_size[1], image_size[0] / input_size[0]


def _for_image(request: TargetRequest, image_size: tuple[int, int],
               input_size: tuple[int, int]) -> TargetRequest:
    """``request`` with its box in the model input's pixels."""
    if request.box is None:
        return request
    sx, sy = _scale(image_size, input_size)
    x0, y0, x1, y1 = request.box
    return dataclasses.replace(request, box=(x0 / sx, y0 / sy, x1 / sx, y1 / sy))


def _to_image(box: Box, scale: tuple[float, float]) -> Box:
    sx, sy = scale
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _input_size(batch: np.ndarray, layout: str) -> tuple[int, int]:
    height, width = (int(batch.shape[axis]) for axis in spatial_axes(layout))
    return height, width


def check_request(explainer: TargetExplainer, image: np.ndarray, spec: Preprocess,
                  request: TargetRequest) -> None:
    """Picks ``image``'s targets (one forward pass; nothing explained or written), raising
    the error a bad request gets: a label the model lacks, a class out of range, an empty
    mask, a reference of another length, ..."""
    batch = preprocess_batch([image], spec)
    input_size = _input_size(batch, explainer.session.layout)
    explainer.pick(batch, [_for_image(request, image.shape[:2], input_size)])


def explain_loaded(explainer: TargetExplainer, loaded: Sequence[Loaded], spec: Preprocess,
                   request: TargetRequest, files: FileOutputs) -> list[ImageRows]:
    """Explains the readable images' targets together (one forward pass, one batch of
    seeds) and writes their files; one entry per image of ``loaded``, in order."""
    readable = [(source, stem, image) for source, stem, image in loaded
                if not isinstance(image, str)]
    written = iter(_explain_readable(explainer, readable, spec, request, files)
                   if readable else [])
    return [ImageRows([], b"", [f"skipped: {image}"], skipped=True)
            if isinstance(image, str) else next(written) for _, _, image in loaded]


def _explain_readable(explainer: TargetExplainer,
                      readable: list[tuple[Path, str, np.ndarray]], spec: Preprocess,
                      request: TargetRequest, files: FileOutputs) -> list[ImageRows]:
    batch = preprocess_batch([image for _, _, image in readable], spec)
    input_size = _input_size(batch, explainer.session.layout)
    requests = [_for_image(request, image.shape[:2], input_size) for _, _, image in readable]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        found = explainer.explain(batch, requests)
    return [_write_image(files, explainer.task, source, stem, image, result,
                         _scale(image.shape[:2], input_size))
            for (source, stem, image), result in zip(readable, found, strict=True)]


def _write_image(files: FileOutputs, task: str, source: Path, stem: str, image: np.ndarray,
                 found: ImageTargets, scale: tuple[float, float]) -> ImageRows:
    thumbnail = thumbnail_jpeg(image) if files.thumbnails else b""
    if not found.results:
        return ImageRows([target_row(source, None, None, task=task, score=None,
                                     completeness_error=None, finite=True,
                                     fields={"note": found.note})],
                         thumbnail, [f"{source}: {found.note}"])
    rows = []
    messages = []
    for index, result in enumerate(found.results):
        overlay_path, map_path = outputs_of(files.outdir, target_stem(stem, index),
                                            files.method)
        finite = finite_target(result)
        if not finite:
            messages.append(f"warning: {source}: target {index}: NaN/Inf in the results "
                            "(finite: false in the summary)")
        box = None if result.box is None else _to_image(result.box, scale)
        if files.overlays:
            shown = overlay_heatmap(image, display_map(result.saliency), alpha=files.alpha)
            save_png(overlay_path, draw_target(shown, box, result.region))
        if files.maps:
            save_npy_atomic(map_path, result.saliency if files.map_size == "model"
                            else resize_map(result.saliency, image.shape[:2]))
        fields = dict(result.fields)
        if box is not None:
            fields["box"] = [round(v, 2) for v in box]
        rows.append(target_row(source, overlay_path, map_path, task=task, score=result.score,
                               completeness_error=result.completeness_error, finite=finite,
                               fields=fields))
    return ImageRows(rows, thumbnail, messages)


def finite_target(result: TargetResult) -> bool:
    """Whether a target's score, map and completeness error (where the method has one) are
    finite."""
    error = result.completeness_error
    return bool(np.isfinite(result.score) and np.all(np.isfinite(result.saliency))
                and (error is None or np.isfinite(error)))
