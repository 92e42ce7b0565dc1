"""``fg-onnx explain`` with targets (``--task``, ``--top-k``, ``--box``, ...): one summary row,
overlay and map per target (``<stem>_t<k>_<method>.png``), a row with a note for an image
without any (no detection above the threshold)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fg_onnx.cli.options import augment_options, read_lines
from fg_onnx.cli.progress import Progress
from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import FileOutputs
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.methods import get_method
from fg_onnx.summary import Row
from fg_onnx.targets.base import TargetRequest
from fg_onnx.targets.outputs import ImageRows, Loaded, check_request, explain_loaded
from fg_onnx.targets.run import TargetExplainer
from fg_onnx.vision.images import load_image
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch

Job = tuple[Path, str]
"""An image and its output stem."""






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








def target_options(args: argparse.Namespace) -> AugmentOptions:
    """The augmentation a targets run takes: the seed-input model of ``--method``'s map
    (the session adds ``seed_input``)."""
    return augment_options(args, method=get_method(args.method).graph,
                           sequence_layout=args.sequence_layout)


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












