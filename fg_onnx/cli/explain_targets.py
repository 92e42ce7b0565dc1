"""``fg-onnx explain`` with targets (``--task``, ``--top-k``, ``--box``, ...): one summary row,
overlay and map per target (``<stem>_t<k>_<method>.png``), a row with a note for an image
without any (no detection above the threshold)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fg_onnx.cli.options import read_lines
from fg_onnx.cli.outputs import outputs_of
from fg_onnx.cli.progress import Progress
from fg_onnx.cli.summary import Row, target_row
from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import save_npy_atomic
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


def run_targets(args: argparse.Namespace, explainer: TargetExplainer, jobs: Sequence[Job],
                spec: Preprocess, progress: Progress) -> tuple[list[Row], list[bytes], int]:
    """Explains every image's targets, a batch of images at a time; returns the summary
    rows, one thumbnail per row and the number of skipped images."""
    request = base_request(args, explainer, spec)
    rows: list[Row] = []
    thumbnails: list[bytes] = []
    skipped = 0
    for start in range(0, len(jobs), args.batch_size):
        loaded = []
        for source, stem in jobs[start:start + args.batch_size]:
            try:
                loaded.append((source, stem, load_image(source)))
            except ImageError as exc:
                print(f"fg-onnx: skipped: {exc}", file=sys.stderr)
                skipped += 1
        if loaded:
            batch = preprocess_batch([image for _, _, image in loaded], spec)
            input_size = (int(batch.shape[2]), int(batch.shape[3])) \
                if explainer.session.layout == "nchw" else (int(batch.shape[1]),
                                                            int(batch.shape[2]))
            requests = [_for_image(request, image.shape[:2], input_size)
                        for _, _, image in loaded]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                found = explainer.explain(batch, requests)
            for (source, stem, image), result in zip(loaded, found, strict=True):
                new = _write_image(args, explainer.task, source, stem, image, result,
                                   _scale(image.shape[:2], input_size))
                rows += new
                thumbnails += [thumbnail_jpeg(image)] * len(new)
        progress.advance(len(jobs[start:start + args.batch_size]))
    return rows, thumbnails, skipped


def _write_image(args: argparse.Namespace, task: str, source: Path, stem: str,
                 image: np.ndarray, found: ImageTargets,
                 scale: tuple[float, float]) -> list[Row]:
    if not found.results:
        print(f"fg-onnx: {source}: {found.note}", file=sys.stderr)
        return [target_row(source, None, None, task=task, score=None,
                           completeness_error=None, finite=True,
                           fields={"note": found.note})]
    rows = []
    for index, result in enumerate(found.results):
        overlay_path, map_path = outputs_of(args.outdir, target_stem(stem, index), args.method)
        finite = _finite(result)
        if not finite:
            print(f"fg-onnx: warning: {source}: target {index}: NaN/Inf in the results "
                  "(finite: false in the summary)", file=sys.stderr)
        box = None if result.box is None else _to_image(result.box, scale)
        shown = overlay_heatmap(image, display_map(result.saliency), alpha=args.alpha)
        save_png(overlay_path, draw_target(shown, box, result.region))
        save_npy_atomic(map_path, result.saliency if args.map_size == "model"
                        else resize_map(result.saliency, image.shape[:2]))
        fields = dict(result.fields)
        if box is not None:
            fields["box"] = [round(v, 2) for v in box]
        rows.append(target_row(source, overlay_path, map_path, task=task, score=result.score,
                               completeness_error=result.completeness_error, finite=finite,
                               fields=fields))
    return rows


def _finite(result: TargetResult) -> bool:
    error = result.completeness_error
    return bool(np.isfinite(result.score) and np.all(np.isfinite(result.saliency))
                and (error is None or np.isfinite(error)))
