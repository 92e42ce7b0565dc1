"""The benchmark's driver: per model, the export, the rewrite and, per batch size, the worker
processes (tools/bench_worker.py) whose results make one Row (tools/bench.py's docstring has
the method)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_errors import BenchError
from bench_models import export_model, image_size
from bench_table import Baseline, Row, markdown_table

TOOLS = Path(__file__).resolve().parent
CHECKOUT = TOOLS.parent  # the fg-onnx whose tools these are: the "new" side of --baseline
WORKER = TOOLS / "bench_worker.py"


def check_checkout(folder: Path) -> Path:
    """``folder`` as an absolute path, if it holds an fg_onnx package (--baseline)."""
    if not (folder / "fg_onnx" / "__init__.py").is_file():
        raise BenchError(f"--baseline {folder}: no fg_onnx package there (give the root of an "
                         f"fg-onnx checkout, e.g. one made by git worktree add)")
    return folder.resolve()


def run_worker(spec: dict[str, Any], folder: Path, checkout: Path = CHECKOUT) -> dict[str, Any]:
    """Runs one measurement in a fresh interpreter that imports fg_onnx from ``checkout``
    (ahead of an installed fg-onnx, which may be another checkout's) and returns its result."""
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    paths = [str(checkout), *filter(None, [os.environ.get("PYTHONPATH")])]
    done = subprocess.run([sys.executable, str(WORKER), json.dumps(spec), str(result_path)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    if done.returncode != 0 or not result_path.exists():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise BenchError(f"{spec['kind']} measurement of {spec.get('model') or spec.get('name')}"
                         f" (batch {spec.get('batch', '-')}) failed: {lines[-1]}")
    return json.loads(result_path.read_text())  # type: ignore[no-any-return]


@dataclass
class Rewrite:
    """One checkout's augmented model of the benchmarked one, and what the rewrite cost."""

    path: Path
    seconds: float
    rss_increase_mib: float
    model_mib: float


def augment(onnx_path: Path, out: Path, args: argparse.Namespace, folder: Path,
            checkout: Path, forward_out: Path | None = None) -> Rewrite:
    """Augments ``onnx_path`` with ``checkout``'s fg_onnx in a worker; with float16, the
    worker also writes the converted original to ``forward_out``."""
    spec = {"kind": "augment", "model": str(onnx_path), "out": str(out),
            "repeats": args.augment_repeats, "device": args.device,
            "precision": args.precision, "forward_out": forward_out and str(forward_out)}
    result = run_worker(spec, folder, checkout)
    if not Path(result["fg_onnx"]).is_relative_to(checkout):
        raise BenchError(f"the worker meant for {checkout} imported fg_onnx from "
                         f"{result['fg_onnx']}")
    return Rewrite(out, statistics.median(result["times"]), result["rss_increase_mib"],
                   result["model_mib"])


def _per_image_ms(times: list[float], batch: int) -> float:
    return statistics.median(times) / batch * 1000


def _map_diff(ours_path: Path, theirs_path: Path) -> float | None:
    """max |ours − theirs| / max |theirs|, or None where a map is missing."""
    if not (ours_path.exists() and theirs_path.exists()):
        return None
    ours, theirs = np.load(ours_path), np.load(theirs_path)
    return float(np.abs(ours - theirs).max() / max(float(np.abs(theirs).max()), 1e-12))


@dataclass
class Subject:
    """What is measured for one model: its files and rewrites (``baseline``: --baseline's)."""

    name: str
    size: int
    state: Path
    forward: Path
    rewrite: Rewrite
    baseline: Rewrite | None


def prepare(name: str, args: argparse.Namespace, folder: Path,
            log: Callable[[str], None]) -> Subject:
    """Exports ``name`` and augments it with this checkout's fg_onnx (and the baseline's)."""
    size = image_size(name, args.image_size)
    onnx_path, state_path = export_model(name, folder, size, args.seed)
    half = args.precision == "float16"
    forward_path = folder / f"{name}.float16.onnx" if half else onnx_path
    rewrite = augment(onnx_path, folder / f"{name}.fg.onnx", args, folder, CHECKOUT,
                      forward_path)
    log(f"{name}: augment {rewrite.seconds:.2f} s, rewrite peak "
        f"+{rewrite.rss_increase_mib:.0f} MiB for a {rewrite.model_mib:.0f} MiB model")
    baseline = None
    if args.baseline is not None:
        baseline = augment(onnx_path, folder / f"{name}.baseline.fg.onnx", args, folder,
                           args.baseline)
        log(f"{name}: baseline augment {baseline.seconds:.2f} s, rewrite peak "
            f"+{baseline.rss_increase_mib:.0f} MiB")
    return Subject(name, size, state_path, forward_path, rewrite, baseline)


def measure_batch(subject: Subject, batch: int, args: argparse.Namespace,
                  folder: Path) -> Row:
    """The Row of one model at one batch size."""
    name = subject.name
    common = {"batch": batch, "image_size": subject.size, "seed": args.seed,
              "device": args.device, "threads": args.threads, "warmup": args.warmup,
              "repeats": args.repeats}
    sal_map, ref_map = folder / f"{name}_{batch}_sal.npy", folder / f"{name}_{batch}_ref.npy"
    alone = {**common, "warmup": 1, "repeats": 1}  # memory, map and profile
    forward = run_worker({**alone, "kind": "forward", "model": str(subject.forward)}, folder)
    saliency = run_worker({**alone, "kind": "saliency", "model": str(subject.rewrite.path),
                           "map_out": str(sal_map), "precision": args.precision,
                           "profile_dir": str(folder) if args.profile else None}, folder)
    interleaved = {**common, "kind": "interleaved", "model": str(subject.rewrite.path),
                   "forward_model": str(subject.forward)}
    if subject.baseline is not None:
        interleaved["baseline_model"] = str(subject.baseline.path)
    timed = run_worker(interleaved, folder)["times"]
    reference = None
    if not args.skip_reference and batch <= args.reference_max_batch:
        reference = run_worker({**common, "kind": "reference", "name": name,
                                "state": str(subject.state), "map_out": str(ref_map),
                                "repeats": args.reference_repeats}, folder)
    measured = {"forward": forward, "saliency": saliency}
    if reference is not None:
        measured["reference"] = reference
    rewrite = subject.rewrite
    row = Row(
        model=name, batch=batch, forward_ms=_per_image_ms(timed["forward"], batch),
        saliency_ms=_per_image_ms(timed["saliency"], batch),
        reference_ms=None if reference is None else _per_image_ms(reference["times"], batch),
        augment_s=rewrite.seconds, rewrite_ratio=rewrite.rss_increase_mib / rewrite.model_mib,
        ref_diff=_map_diff(sal_map, ref_map), completeness=saliency.get("completeness"),
        precision=args.precision,
        peak_rss_mib={k: v["peak_rss_mib"] for k, v in measured.items()},
        gpu_mib={k: v.get("gpu_mib") for k, v in measured.items()},
        profile=saliency.get("profile"))
    if subject.baseline is not None:
        row.baseline = measure_baseline(subject.baseline, alone, timed["baseline"], sal_map,
                                        args, folder)
    return row


def measure_baseline(rewrite: Rewrite, alone: dict[str, Any], times: list[float],
                     current_map: Path, args: argparse.Namespace, folder: Path) -> Baseline:
    """The baseline's side of a Row: its times from the interleaved run, its memory, map and
    completeness from a process of its own, as the current model's."""
    base_map = current_map.with_name(current_map.stem + "_baseline.npy")
    alone_result = run_worker({**alone, "kind": "saliency", "model": str(rewrite.path),
                               "map_out": str(base_map), "precision": args.precision}, folder)
    return Baseline(saliency_ms=_per_image_ms(times, alone["batch"]), augment_s=rewrite.seconds,
                    peak_rss_mib=alone_result["peak_rss_mib"],
                    completeness=alone_result.get("completeness"),
                    map_diff=_map_diff(current_map, base_map))


def bench_model(name: str, args: argparse.Namespace, folder: Path,
                log: Callable[[str], None]) -> list[Row]:
    """All measurements of one model."""
    subject = prepare(name, args, folder, log)
    rows = []
    for batch in args.batch_sizes:
        row = measure_batch(subject, batch, args, folder)
        log(markdown_table([row]).splitlines()[-1])
        rows.append(row)
    return rows
