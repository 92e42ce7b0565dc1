"""``fg-onnx explain`` with targets (``--task``, ``--top-k``, ``--box``, ...): one summary row,
overlay and map per target (``<stem>_t<k>_<method>.png``), a row with a note for an image
without any (no detection above the threshold)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fg_onnx.choices import spatial_axes
from fg_onnx.cli.options import augment_options, read_lines
from fg_onnx.cli.outputs import FileOutputs, outputs_of
from fg_onnx.cli.progress import Progress
from fg_onnx.cli.summary import Row, target_row
from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import save_npy_atomic
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.methods import get_method
from fg_onnx.targets.base import Box, TargetRequest
from fg_onnx.targets.run import ImageTargets, TargetExplainer, TargetResult
from fg_onnx.vision.images import load_image
from fg_onnx.vision.overlay import (
    display_map,
    draw_target,
    overlay_heatmap,
    resize_map,
    save_png,
    thumbnail_jpeg,
)
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch

Job = tuple[Path, str]
"""An image and its output stem."""
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


def existing_target_outputs(outdir: Path, stems: Sequence[str], method: str) -> list[Path]:
    """Earlier results of these images' targets, which a run without --force keeps."""
    if not outdir.is_dir():
        return []
    return [p for stem in stems for p in outdir.glob(f"{_glob_escape(stem)}_t*_{method}.*")]


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def base_request(args: argparse.Namespace, explainer: TargetExplainer,
                 spec: Preprocess) -> TargetRequest:
    """The request the options make (boxes still in image pixels: see :func:`_for_image`)."""
    labels = read_lines(args.labels, "labels") if args.labels else explainer.labels
    alphabet = read_lines(args.alphabet, "alphabet") if args.alphabet else explainer.alphabet
    mask = None
    if args.mask is not None:
        mask = load_image(args.mask).max(axis=2) > 0
    return TargetRequest(
        target=args.target, label=args.label, labels=labels, top_k=args.top_k or 1,
        threshold=args.threshold, iou=args.iou, box=args.box, mask=mask,
        detection_format=args.detection_format, box_format=args.box_format,
        box_scale=args.box_scale, alphabet=alphabet, blank=args.blank,
        time_step=args.time_step, reference=_reference(args, explainer, spec),
        similarity=args.similarity)


def _reference(args: argparse.Namespace, explainer: TargetExplainer,
               spec: Preprocess) -> np.ndarray | None:
    """--reference: a .npy vector, or another image's embedding through the same model."""
    path: Path | None = args.reference
    if path is None:
        return None
    if path.suffix.lower() == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False), np.float64).reshape(-1)
        except (OSError, ValueError) as exc:
            raise FgOnnxError(f"cannot read the reference vector {path}: {exc}") from None
    image = load_image(path)
    return np.asarray(explainer.embed(preprocess_batch([image], spec))[0], np.float64)


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


def target_options(args: argparse.Namespace) -> AugmentOptions:
    """The augmentation a targets run takes: the seed-input model of ``--method``'s map
    (the session adds ``seed_input``)."""
    return augment_options(args, method=get_method(args.method).graph)


def run_targets(args: argparse.Namespace, explainer: TargetExplainer, jobs: Sequence[Job],
                spec: Preprocess, progress: Progress) -> tuple[list[Row], list[bytes], int]:
    """Explains every image's targets, a batch of images at a time, in this process or
    (``--engine ray``) on Ray actors; returns the summary rows, one thumbnail per row and
    the number of skipped images."""
    request = base_request(args, explainer, spec)
    if args.engine == "ray":
        return tally(_on_ray(args, explainer, jobs, spec, request, progress))
    files = FileOutputs(args.outdir, args.method, args.alpha, map_size=args.map_size)
    rows: list[Row] = []
    thumbnails: list[bytes] = []
    skipped = 0
    for start in range(0, len(jobs), args.batch_size):
        chunk = jobs[start:start + args.batch_size]
        new_rows, new_thumbnails, new_skipped = tally(
            explain_loaded(explainer, [_load(job) for job in chunk], spec, request, files))
        rows += new_rows
        thumbnails += new_thumbnails
        skipped += new_skipped
        progress.advance(len(chunk))
    return rows, thumbnails, skipped


def _on_ray(args: argparse.Namespace, explainer: TargetExplainer, jobs: Sequence[Job],
            spec: Preprocess, request: TargetRequest, progress: Progress) -> list[ImageRows]:
    """The run on Ray actors, which write the files; a request the model cannot take is
    refused here first, before Ray starts and anything is written (an actor's error comes
    after both)."""
    from fg_onnx.ray import explain_target_files

    first = next((image for _, _, image in map(_load, jobs) if not isinstance(image, str)),
                 None)
    if first is not None:
        check_request(explainer, first, spec, request)
    found = explain_target_files(
        jobs, args.model,
        FileOutputs(args.outdir.resolve(), args.method, args.alpha, map_size=args.map_size),
        task=explainer.task, request=request, address=args.address, workers=args.workers,
        options=target_options(args), preprocess=spec, device=args.device,
        batch_size=args.batch_size, progress=progress.advance)
    progress.finish()
    return found


def _load(job: Job) -> Loaded:
    source, stem = job
    try:
        return source, stem, load_image(source)
    except ImageError as exc:
        return source, stem, str(exc)


def tally(found: Sequence[ImageRows]) -> tuple[list[Row], list[bytes], int]:
    """The images' rows, one thumbnail per row and the number skipped; prints their
    messages."""
    for image in found:
        for message in image.messages:
            print(f"fg-onnx: {message}", file=sys.stderr)
    rows = [row for image in found for row in image.rows]
    thumbnails = [image.thumbnail for image in found for _ in image.rows]
    return rows, thumbnails, sum(image.skipped for image in found)


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
