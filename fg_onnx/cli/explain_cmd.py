"""``fg-onnx explain``: FullGrad heatmaps for images."""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fg_onnx.cli import SUMMARIES
from fg_onnx.cli.explain_targets import existing_target_outputs, run_targets, target_options
from fg_onnx.cli.model_input import require_one_input
from fg_onnx.cli.options import (
    add_augment_options,
    add_method_options,
    add_model_and_images,
    add_output_options,
    add_preprocess_options,
    add_runtime_options,
    add_target_options,
    augment_options,
    method_params,
    positive_int,
    preprocess_options,
    runtime_options,
    uses_targets,
)
from fg_onnx.cli.outputs import is_result_name, output_folder
from fg_onnx.cli.progress import Progress, status
from fg_onnx.cli.reports import write_explain_report
from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import FileOutputs, outputs_of, save_npy_atomic
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.methods import METHOD_NAMES, Explainer, get_method
from fg_onnx.report.html import REPORT_NAME
from fg_onnx.runtime.providers import Device
from fg_onnx.runtime.session import Explanation, FullGrad
from fg_onnx.summary import Row, labels_of, summary_row, write_summary
from fg_onnx.targets.run import TargetExplainer, plan_task
from fg_onnx.vision.images import iter_image_paths, load_image
from fg_onnx.vision.overlay import (
    display_map,
    overlay_heatmap,
    resize_map,
    save_png,
    thumbnail_jpeg,
)
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


INT64_MAX = 2**63 - 1


def _target(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -1 <= value <= INT64_MAX:
        # -1 is the only negative: it means the predicted class (fg_target's contract).
        raise argparse.ArgumentTypeError(f"expected a class index (0, 1, ...) or -1 for the "
                                         f"predicted class, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``explain`` sub-command."""
    parser = commands.add_parser(
        "explain", help=SUMMARIES["explain"],
        description="Explain MODEL's prediction on each image: writes a heatmap overlay PNG and "
                    "the raw map (.npy) per image, and summary.json/summary.csv.",
    )
    add_model_and_images(parser, "ONNX model (original or augmented)")
    add_output_options(parser, "fg_out")
    parser.add_argument("--target", type=_target, metavar="K",
                        help="class to explain (default, or -1: the predicted class)")
    parser.add_argument("--alpha", type=_alpha, default=0.5,
                        help="heatmap opacity in overlays, 0 to 1 (default 0.5)")
    parser.add_argument("--map-size", choices=["model", "image"], default="model",
                        help="size of the .npy maps: the model's input size (default; the "
                             "size the map is computed at) or each image's own size (resized "
                             "bilinearly, as the overlays are)")
    parser.add_argument("--method", choices=METHOD_NAMES, default="fullgrad",
                        help="saliency method (default: fullgrad)")
    add_preprocess_options(parser)
    add_runtime_options(parser)
    add_method_options(parser)
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: Ray Data actors, one session each "
                             "(pip install 'fg-onnx[ray]')")
    engine.add_argument("--address", help="Ray cluster to join (default: a local Ray); images, "
                                          "model and -o must be on a shared file system")
    engine.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="Ray actors, one onnxruntime session each (default 1)")
    add_target_options(parser)
    add_augment_options(parser)
    parser.set_defaults(run=run, needs_runtime=True)


@dataclass
class _Job:
    source: Path
    stem: str


def _jobs(paths: list[Path], outdir: Path, method: str) -> list[_Job]:
    """One output stem per image: the file's own stem when it is the first image with that
    stem, else ``<stem>_<k>`` with the smallest k that is no image's stem and no stem given
    out before, so that no two images share their outputs; never a stem whose outputs would
    replace one of the images. Compared case-insensitively, as some file systems do."""
    inputs = {path.resolve() for path in paths}

    def replaces_an_input(stem: str) -> bool:
        return any(p.resolve() in inputs for p in outputs_of(outdir, stem, method))

    first: dict[str, Path] = {}
    for path in paths:
        first.setdefault(path.stem.casefold(), path)
    # Every file's own stem is claimed up front: a later a_1.png keeps "a_1" even when an
    # earlier a.png needs a generated one.
    taken = set(first)
    jobs = []
    for path in paths:
        stem = path.stem
        if first[stem.casefold()] is not path or replaces_an_input(stem):
            stem = next(name for name in (f"{path.stem}_{k}" for k in itertools.count(1))
                        if name.casefold() not in taken and not replaces_an_input(name))
        taken.add(stem.casefold())
        jobs.append(_Job(path, stem))
    return jobs


def _check_outdir(outdir: Path, jobs: list[_Job], force: bool, method: str) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise FgOnnxError(f"output path {outdir} exists and is not a folder")
    if force or not outdir.exists():
        return
    planned = [p for job in jobs for p in outputs_of(outdir, job.stem, method)]
    planned += [outdir / "summary.json", outdir / "summary.csv", outdir / REPORT_NAME]
    existing = [p for p in planned if p.exists()]
    if existing:
        raise FgOnnxError(f"{len(existing)} result files already exist in {outdir} (e.g. "
                          f"{existing[0].name}); pass --force to overwrite or choose -o")


def run(args: argparse.Namespace) -> int:
    """Explains every image and writes the results; exit 1 when some images were skipped or
    have NaN/Inf results."""
    paths = iter_image_paths(args.images, outdir=args.outdir, is_output=is_result_name)
    jobs = _jobs(paths, args.outdir, args.method)
    _check_outdir(args.outdir, jobs, args.force, args.method)
    runtime = runtime_options(args)
    status(f"preparing {args.model.name} for {args.method} ...")
    targeted = _targeted_explainer(args, runtime.device, runtime.batch_size)
    if targeted is not None:
        _check_target_outdir(args.outdir, jobs, args.force, args.method)
        explainer: Explainer | TargetExplainer = targeted
        fullgrad = targeted.session
    else:
        # With Ray the workers hold the sessions; this one only reads the model's facts.
        explainer = Explainer(args.model, args.method, params=method_params(args),
                              device="cpu" if args.engine == "ray" else runtime.device,
                              batch_size=runtime.batch_size, options=_augment_options(args))
        fullgrad = explainer.session
    require_one_input(fullgrad.session, fullgrad.input_name, "explain")
    spec = preprocess_options(args, fullgrad)
    if targeted is None and args.target is not None and fullgrad.classes is not None \
            and args.target >= fullgrad.classes:
        raise FgOnnxError(f"--target {args.target} is out of range: the model has "
                          f"{fullgrad.classes} classes (0..{fullgrad.classes - 1})")
    report = fullgrad.provider_report
    # The one line that says where the run runs, and why not on CUDA when it could have.
    notes = [note for note in (report.note, _precision_note(fullgrad)) if note]
    print(f"running on {report.active}" + (f" ({'; '.join(notes)})" if notes else ""),
          file=sys.stderr)
    labels = labels_of(fullgrad.metadata)
    with output_folder(args.outdir):
        progress = Progress(len(jobs))
        if isinstance(explainer, TargetExplainer):
            rows, thumbnails, skipped = run_targets(
                args, explainer, [(job.source, job.stem) for job in jobs], spec, progress)
        elif args.engine == "ray":
            rows, thumbnails, skipped = _run_ray(args, jobs, spec, labels, progress)
        else:
            rows, thumbnails, skipped = _run_local(args, explainer, jobs, spec, labels,
                                                   progress)
        write_summary(args.outdir, rows)
        mapped = [(row, thumb) for row, thumb in zip(rows, thumbnails, strict=True)
                  if row["map"]]  # a target row's note (no detection) has no map to show
        write_explain_report(args.outdir, [row for row, _ in mapped],
                             [thumb for _, thumb in mapped], model=args.model,
                             method=args.method, skipped=skipped)
    broken = sum(1 for row in rows if not row["finite"])
    if targeted is not None:
        images = len({row["file"] for row in rows})
        print(f"explained {sum(1 for row in rows if row['map'])} target(s) in {images} "
              f"image(s) ({targeted.task})" + (f", skipped {skipped}" if skipped else "")
              + (f", {broken} with NaN/Inf" if broken else "") + f"; results in {args.outdir}")
        return 1 if skipped or broken else 0
    print(f"explained {len(rows)} image(s)" + (f", skipped {skipped}" if skipped else "")
          + (f", {broken} with NaN/Inf" if broken else "") + f"; results in {args.outdir}")
    if broken and fullgrad.precision == "float16":
        print("fg-onnx: float16 overflowed: lower --gradient-scale, or use --precision float32",
              file=sys.stderr)
    return 1 if skipped or broken else 0


def _targeted_explainer(args: argparse.Namespace, device: Device, batch_size: int,
                        ) -> TargetExplainer | None:
    """The explainer of targets when the run names any (a task other than classification,
    --top-k, --label, ...); None for today's one class per image."""
    task = args.task
    if not uses_targets(args):
        task = plan_task(args.model, args.task, _augment_options(args))
        if task == "classification":
            return None
    if get_method(args.method).runner is not None:
        raise FgOnnxError(f"--method {args.method} explains one class per image; targets "
                          "take the in-graph methods (fullgrad, gradient, grad-cam, ...)")
    if args.task == "auto" and args.reference is not None:
        task = "embedding"
    # With Ray the workers hold the sessions; this one picks the reference embedding and
    # checks the request before Ray starts.
    return TargetExplainer(args.model, task=task,
                           device="cpu" if args.engine == "ray" else device,
                           batch_size=batch_size, options=target_options(args))


def _check_target_outdir(outdir: Path, jobs: list[_Job], force: bool, method: str) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise FgOnnxError(f"output path {outdir} exists and is not a folder")
    if force:
        return
    existing = existing_target_outputs(outdir, [job.stem for job in jobs], method)
    existing += [p for p in (outdir / "summary.json", outdir / "summary.csv",
                             outdir / REPORT_NAME) if p.exists()]
    if existing:
        raise FgOnnxError(f"{len(existing)} result files already exist in {outdir} (e.g. "
                          f"{existing[0].name}); pass --force to overwrite or choose -o")


def _run_local(args: argparse.Namespace, explainer: Explainer, jobs: list[_Job],
               spec: Preprocess, labels: list[str], progress: Progress,
               ) -> tuple[list[Row], list[bytes], int]:
    """Explains ``jobs`` in this process, a batch at a time; returns the summary rows, the
    images' thumbnails and the number of skipped images."""
    rows: list[Row] = []
    thumbnails: list[bytes] = []
    skipped = 0
    for start in range(0, len(jobs), args.batch_size):
        chunk = jobs[start:start + args.batch_size]
        loaded = []
        for job in chunk:
            try:
                loaded.append((job, load_image(job.source)))
            except ImageError as exc:
                print(f"fg-onnx: skipped: {exc}", file=sys.stderr)
                skipped += 1
        if loaded:
            batch = preprocess_batch([image for _, image in loaded], spec)
            # NaN/Inf results are reported per image below: numpy's overflow and invalid-value
            # warnings while computing them would only repeat that without naming the image.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                result = explainer.explain(batch, args.target)
            rows += _write_results(args, loaded, result, labels)
            thumbnails += [thumbnail_jpeg(image) for _, image in loaded]
        progress.advance(len(chunk))
    return rows, thumbnails, skipped


def _precision_note(fullgrad: FullGrad) -> str | None:
    if fullgrad.precision != "float16":
        return None
    if fullgrad.provider_report.on_cuda:
        return "float16"
    return ("float16; onnxruntime's CPU provider computes most float16 ops in float32, which "
            "makes it slower than --precision float32 there")


def _run_ray(args: argparse.Namespace, jobs: list[_Job], spec: Preprocess,
             labels: list[str], progress: Progress) -> tuple[list[Row], list[bytes], int]:
    """Explains ``jobs`` with Ray actors that write the files; returns the summary rows and
    thumbnails (in ``jobs`` order) and the number of skipped images."""
    from fg_onnx.ray import explain_files

    results = explain_files(
        [(job.source, job.stem) for job in jobs], args.model,
        FileOutputs(args.outdir.resolve(), args.method, args.alpha, map_size=args.map_size),
        address=args.address,
        workers=args.workers, method=args.method, params=method_params(args),
        options=_augment_options(args), preprocess=spec, target=args.target,
        device=args.device, batch_size=args.batch_size, progress=progress.advance)
    progress.finish()
    rows: list[Row] = []
    thumbnails: list[bytes] = []
    skipped = 0
    for job, result in zip(jobs, results, strict=True):
        if result["error"]:
            print(f"fg-onnx: skipped: {result['error']}", file=sys.stderr)
            skipped += 1
            continue
        if not result["finite"]:
            print(f"fg-onnx: warning: {job.source}: NaN/Inf in the results "
                  "(finite: false in the summary)", file=sys.stderr)
        error = float(result["completeness_error"])
        rows.append(_row(args, job, labels, int(result["target"]), float(result["score"]),
                         int(result["predicted"]), None if np.isnan(error) else error,
                         bool(result["finite"])))
        thumbnails.append(bytes(result["thumbnail"]))
    return rows, thumbnails, skipped


def _row(args: argparse.Namespace, job: _Job, labels: list[str], target: int, score: float,
         predicted: int, completeness_error: float | None, finite: bool) -> Row:
    overlay, saliency_map = outputs_of(args.outdir, job.stem, args.method)
    return summary_row(job.source, overlay, saliency_map, labels, target=target, score=score,
                       predicted=predicted, completeness_error=completeness_error,
                       finite=finite)


def _write_results(args: argparse.Namespace, loaded: list[tuple[_Job, np.ndarray]],
                   result: Explanation, labels: list[str]) -> list[Row]:
    rows: list[Row] = []
    errors = result.completeness_error
    for i, (job, image) in enumerate(loaded):
        overlay_path, map_path = outputs_of(args.outdir, job.stem, args.method)
        saliency = result.saliency[i]
        error = None if errors is None else float(errors[i])
        broken = _non_finite(saliency, float(result.scores[i]), error)
        if broken:
            print(f"fg-onnx: warning: {job.source}: NaN/Inf in the {' and the '.join(broken)} "
                  "(finite: false in the summary)", file=sys.stderr)
        save_png(overlay_path, overlay_heatmap(image, display_map(saliency), alpha=args.alpha))
        save_npy_atomic(map_path, saliency if args.map_size == "model"
                        else resize_map(saliency, image.shape[:2]))
        rows.append(_row(args, job, labels, int(result.targets[i]), float(result.scores[i]),
                         int(result.predicted[i]), error, not broken))
    return rows


def _non_finite(saliency: np.ndarray, score: float, error: float | None) -> list[str]:
    """What of one image's result is NaN/Inf (an input or a model that overflows; the
    completeness error also when only the gradients overflow, where the method has one)."""
    broken = [] if np.isfinite(score) else ["score"]
    broken += [] if np.all(np.isfinite(saliency)) else ["map"]
    return broken + ([] if error is None or np.isfinite(error) else ["completeness error"])


def _augment_options(args: argparse.Namespace) -> AugmentOptions:
    return augment_options(args, sequence_layout=args.sequence_layout)
