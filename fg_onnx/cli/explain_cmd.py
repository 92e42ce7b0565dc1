"""``fg-onnx explain``: FullGrad heatmaps for images."""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fg_onnx.cli.augment_cmd import add_augment_options, options_from_args, parse_size
from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import make_folder, save_npy_atomic, write_bytes_atomic
from fg_onnx.fullgrad.contract import TARGET
from fg_onnx.methods import METHOD_NAMES, Explainer, MethodParams
from fg_onnx.runtime.session import Explanation, FullGrad
from fg_onnx.vision.images import iter_image_paths, load_image
from fg_onnx.vision.overlay import display_map, overlay_heatmap, save_png
from fg_onnx.vision.preprocess import (
    PRESETS,
    ModelFacts,
    Preprocess,
    model_preprocess,
    preprocess_batch,
)

LABELS_KEY = "fg_onnx.labels"
SUMMARY_FIELDS = ("file", "target", "target_label", "score", "predicted", "predicted_label",
                  "completeness_error", "finite", "overlay", "map")


def _floats(text: str) -> tuple[float, ...]:
    """One value (every channel) or three (R, G, B)."""
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one number or three like 0.5,0.5,0.5, got {text!r}"
        ) from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one number or three (R,G,B), got {text!r}")
    return values


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
        "explain", help="write FullGrad heatmaps for images",
        description="Explain MODEL's prediction on each image: writes a heatmap overlay PNG and "
                    "the raw map (.npy) per image, and summary.json/summary.csv.",
    )
    parser.add_argument("model", type=Path, help="ONNX model (original or augmented)")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument("-o", "--outdir", type=Path, default=Path("fg_out"),
                        help="output folder (default: fg_out)")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files")
    add_preprocess_options(parser)
    parser.add_argument("--target", type=_target,
                        help="class to explain (default, or -1: the predicted class)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--alpha", type=_alpha, default=0.5,
                        help="heatmap opacity in overlays, 0 to 1 (default 0.5)")
    parser.add_argument("--method", choices=METHOD_NAMES, default="fullgrad",
                        help="saliency method (default: fullgrad)")
    add_method_options(parser)
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: Ray Data actors, one session each "
                             "(pip install 'fg-onnx[ray]')")
    parser.add_argument("--address", help="Ray cluster to join (default: a local Ray); images, "
                                          "model and -o must be on a shared file system")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray actors, one onnxruntime session each (default 1)")
    add_augment_options(parser)
    parser.set_defaults(run=run)


def add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    """How images become model inputs (shared with ``evaluate``)."""
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="normalisation (default: the model's fg_onnx.preprocess metadata, "
                             "else imagenet)")
    parser.add_argument("--size", type=parse_size, metavar="HxW",
                        help="input size (default: the model's fixed input size)")
    parser.add_argument("--mean", type=_floats, metavar="M|R,G,B",
                        help="mean: one value for every channel, or R,G,B; 1-channel (grayscale) "
                             "models take one value (default: the preset's; averaged for them)")
    parser.add_argument("--std", type=_floats, metavar="S|R,G,B",
                        help="std, as --mean")
    parser.add_argument("--bgr", action="store_true", help="the model expects BGR channels")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """Settings of the methods that combine several runs (shared with ``evaluate``)."""
    defaults = MethodParams()
    parser.add_argument("--samples", type=int, default=defaults.samples,
                        help=f"noisy copies per image for smoothgrad and smooth-fullgrad "
                             f"(default {defaults.samples})")
    parser.add_argument("--noise", type=float, default=defaults.noise,
                        help="noise σ as a fraction of each image's value range "
                             f"(default {defaults.noise})")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"integrated-gradients path steps (default {defaults.steps})")


def method_params(args: argparse.Namespace) -> MethodParams:
    """MethodParams from parsed arguments."""
    return MethodParams(samples=args.samples, noise=args.noise, steps=args.steps,
                        seed=getattr(args, "seed", 0))


@dataclass
class _Job:
    source: Path
    stem: str


def preprocess_spec(args: argparse.Namespace, model: ModelFacts) -> Preprocess:
    """The preprocessing the options ask for, completed from the model's metadata."""
    return model_preprocess(model, size=args.size, preset_name=args.preset, mean=args.mean,
                            std=args.std, bgr=args.bgr)


def _jobs(paths: list[Path], outdir: Path, method: str) -> list[_Job]:
    """One output stem per image: the file's own stem when it is the first image with that
    stem, else ``<stem>_<k>`` with the smallest k that is no image's stem and no stem given
    out before, so that no two images share their outputs; never a stem whose outputs would
    replace one of the images. Compared case-insensitively, as some file systems do."""
    inputs = {path.resolve() for path in paths}

    def replaces_an_input(stem: str) -> bool:
        return any(p.resolve() in inputs for p in _outputs_of(outdir, stem, method))

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


def is_result_name(name: str) -> bool:
    """Whether ``name`` is that of an image explain or evaluate writes (with any method)."""
    return name == "evaluation.png" or any(name.endswith(f"_{method}.png")
                                           for method in METHOD_NAMES)


def _outputs_of(outdir: Path, stem: str, method: str) -> tuple[Path, Path]:
    return outdir / f"{stem}_{method}.png", outdir / f"{stem}_{method}.npy"


def _check_outdir(outdir: Path, jobs: list[_Job], force: bool, method: str) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise FgOnnxError(f"output path {outdir} exists and is not a folder")
    if force or not outdir.exists():
        return
    planned = [p for job in jobs for p in _outputs_of(outdir, job.stem, method)]
    planned += [outdir / "summary.json", outdir / "summary.csv"]
    existing = [p for p in planned if p.exists()]
    if existing:
        raise FgOnnxError(f"{len(existing)} result files already exist in {outdir} (e.g. "
                          f"{existing[0].name}); pass --force to overwrite or choose -o")


def require_one_input(session: ort.InferenceSession, explained: str, command: str) -> None:
    """Refuses a model that needs inputs besides the explained one (and fg_target): images
    give only that one."""
    others = [i.name for i in session.get_inputs() if i.name not in (explained, TARGET)]
    if others:
        raise FgOnnxError(
            f"{command} cannot supply the model's other input(s) "
            f"{', '.join(repr(name) for name in others)}: it feeds images to {explained!r} "
            "only (run the model fg-onnx augment writes with all its inputs instead)")


def _labels(fullgrad: FullGrad) -> list[str]:
    try:
        labels = json.loads(fullgrad.metadata.get(LABELS_KEY, "[]"))
    except json.JSONDecodeError:
        return []
    return [str(v) for v in labels] if isinstance(labels, list) else []


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.live = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        end = "\r" if self.live and self.done < self.total else "\n"
        if self.live or self.done == self.total:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            print(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images",
                  end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Explains every image and writes the results; exit 1 when some images were skipped or
    have NaN/Inf results."""
    paths = iter_image_paths(args.images, outdir=args.outdir, is_output=is_result_name)
    jobs = _jobs(paths, args.outdir, args.method)
    _check_outdir(args.outdir, jobs, args.force, args.method)
    engine = getattr(args, "engine", "local")
    if engine == "ray" and args.workers < 1:
        raise FgOnnxError(f"--workers must be at least 1, got {args.workers}")
    # With Ray the workers hold the sessions; this one only reads the model's facts.
    explainer = Explainer(args.model, args.method, params=method_params(args),
                          device="cpu" if engine == "ray" else args.device,
                          batch_size=args.batch_size, options=options_from_args(args))
    fullgrad = explainer.session
    require_one_input(fullgrad.session, fullgrad.input_name, "explain")
    report = fullgrad.provider_report
    notes = [note for note in (report.note, _precision_note(fullgrad)) if note]
    print(f"running on {report.active}" + (f" ({'; '.join(notes)})" if notes else ""),
          file=sys.stderr)
    spec = preprocess_spec(args, fullgrad)
    make_folder(args.outdir)
    labels = _labels(fullgrad)
    rows: list[dict[str, object]] = []
    skipped = 0
    progress = _Progress(len(jobs))
    if engine == "ray":
        rows, skipped = _run_ray(args, jobs, spec, labels)
        progress.advance(len(jobs))
    for start in range(0, len(jobs) if engine == "local" else 0, args.batch_size):
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
        progress.advance(len(chunk))
    _write_summary(args.outdir, rows)
    broken = sum(1 for row in rows if not row["finite"])
    print(f"explained {len(rows)} image(s)" + (f", skipped {skipped}" if skipped else "")
          + (f", {broken} with NaN/Inf" if broken else "") + f"; results in {args.outdir}")
    if broken and fullgrad.precision == "float16":
        print("fg-onnx: float16 overflowed: lower --gradient-scale, or use --precision float32",
              file=sys.stderr)
    return 1 if skipped or broken else 0


def _precision_note(fullgrad: FullGrad) -> str | None:
    if fullgrad.precision != "float16":
        return None
    if fullgrad.provider_report.on_cuda:
        return "float16"
    return ("float16; onnxruntime's CPU provider computes most float16 ops in float32, which "
            "makes it slower than --precision float32 there")


def _run_ray(args: argparse.Namespace, jobs: list[_Job], spec: Preprocess,
             labels: list[str]) -> tuple[list[dict[str, object]], int]:
    """Explains ``jobs`` with Ray actors that write the files; returns the summary rows (in
    ``jobs`` order) and the number of skipped images."""
    from fg_onnx.ray import FileOutputs, _ray, explain_dataset

    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        outdir = args.outdir.resolve()
        items = [{"index": i, "path": str(job.source.resolve()), "stem": job.stem}
                 for i, job in enumerate(jobs)]
        results = explain_dataset(
            ray.data.from_items(items), str(Path(args.model).resolve()), method=args.method,
            params=method_params(args), options=options_from_args(args), preprocess=spec,
            target=args.target, device=args.device, batch_size=args.batch_size,
            concurrency=args.workers, files=FileOutputs(outdir, args.method, args.alpha))
        done = [row for batch in results.drop_columns(["saliency"]).iter_batches(
                    batch_size=1024, batch_format="numpy")
                for row in _rows_of(batch)]
    finally:
        if started:
            ray.shutdown()
    rows: list[dict[str, object]] = []
    skipped = 0
    for row in sorted(done, key=lambda r: int(r["index"])):
        job = jobs[int(row["index"])]
        if row["error"]:
            print(f"fg-onnx: skipped: {row['error']}", file=sys.stderr)
            skipped += 1
            continue
        overlay_path, map_path = _outputs_of(args.outdir, job.stem, args.method)
        if not row["finite"]:
            print(f"fg-onnx: warning: {job.source}: NaN/Inf in the results "
                  "(finite: false in the summary)", file=sys.stderr)
        target, predicted = int(row["target"]), int(row["predicted"])
        rows.append({
            "file": str(job.source), "target": target, "target_label": _label(labels, target),
            "score": _number(row["score"]), "predicted": predicted,
            "predicted_label": _label(labels, predicted),
            "completeness_error": _number(row["completeness_error"]),
            "finite": bool(row["finite"]), "overlay": overlay_path.name, "map": map_path.name,
        })
    return rows, skipped


def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def _write_results(args: argparse.Namespace, loaded: list[tuple[_Job, np.ndarray]],
                   result: Explanation, labels: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, (job, image) in enumerate(loaded):
        overlay_path, map_path = _outputs_of(args.outdir, job.stem, args.method)
        saliency = result.saliency[i]
        error = None if result.completeness_error is None else result.completeness_error[i]
        broken = _non_finite(saliency, float(result.scores[i]), error)
        if broken:
            print(f"fg-onnx: warning: {job.source}: NaN/Inf in the {' and the '.join(broken)} "
                  "(finite: false in the summary)", file=sys.stderr)
        save_png(overlay_path, overlay_heatmap(image, display_map(saliency), alpha=args.alpha))
        save_npy_atomic(map_path, saliency)
        target, predicted = int(result.targets[i]), int(result.predicted[i])
        rows.append({
            "file": str(job.source), "target": target, "target_label": _label(labels, target),
            "score": _number(result.scores[i]), "predicted": predicted,
            "predicted_label": _label(labels, predicted),
            "completeness_error": None if error is None else _number(error),
            "finite": not broken, "overlay": overlay_path.name, "map": map_path.name,
        })
    return rows


def _non_finite(saliency: np.ndarray, score: float, error: float | None) -> list[str]:
    """What of one image's result is NaN/Inf (an input or a model that overflows; the
    completeness error also when only the gradients overflow)."""
    broken = [] if np.isfinite(score) else ["score"]
    broken += [] if np.all(np.isfinite(saliency)) else ["map"]
    return broken + ([] if error is None or np.isfinite(error) else ["completeness error"])


def _number(value: np.floating | float) -> float | None:
    """A float for the summary; None (JSON null) for NaN/Inf, which JSON cannot hold."""
    number = float(value)
    return number if np.isfinite(number) else None


def _label(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else ""


def _write_summary(outdir: Path, rows: list[dict[str, object]]) -> None:
    write_bytes_atomic(outdir / "summary.json", json.dumps(rows, indent=2).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(outdir / "summary.csv", text.getvalue().encode())
