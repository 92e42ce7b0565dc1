"""Benchmarks fg-onnx: FullGrad saliency time against the model's own forward pass and against a
PyTorch FullGrad, plus the cost of the rewrite.

Usage (torch and torchvision required; ``--models tiny`` needs torch only)::

    python tools/bench.py [--models resnet50,vgg16_bn] [--batch-sizes 1,16] [--device cpu]
                          [--repeats 3] [--warmup 1] [--skip-reference] [--out table.md]
    python tools/bench.py --quick          # 1 model, batch 1 and 16, 2 repeats
    python tools/bench.py --baseline /tmp/old ...   # also time another checkout's rewrite

Method:
    * Models are torchvision's with random weights (``weights=None`` after
      ``torch.manual_seed(seed)``) and random BatchNorm statistics and affine parameters (as
      a trained network has; fresh ones are the identity and would leave the folded
      convolutions without biases, hence without bias taps), exported with the TorchScript
      exporter (opset 17, dynamic batch, eval mode, so BatchNorm is folded into Conv as in a
      usual deployment export).
    * Every measurement runs in a fresh subprocess of this script, so the peak resident set
      size it reports belongs to that measurement alone: VmHWM from /proc/self/status, the
      ``ru_maxrss`` high-water mark without what Linux carries over from the parent across
      fork and exec. It includes the interpreter, the libraries, the weights and the
      runtime's arena: compare columns, not absolute values. On CUDA the JSON output also has
      ``gpu_mib``, the process's device memory after the runs (``nvidia-smi``; onnxruntime's
      arena and torch's caching allocator keep their peak).
    * forward: the exported model on an onnxruntime session (ORT_ENABLE_ALL, opened with
      ``fg_onnx.runtime.providers.open_session``). saliency: the augmented model fetching only
      ``fg_saliency`` and ``fg_score`` with ``fg_target = -1`` (the predicted class). On CUDA
      both use IO binding as ``fg_onnx.runtime.session`` does; the timed call includes the
      input upload and the output download. Their times come from one process holding both
      sessions and calling them alternately (forward, saliency, forward, ...), so that the
      ratio compares like with like on a shared machine; their peak memory, the map and the
      ``--profile`` data come from a process per session.
    * reference: ``tools/reference_fullgrad.py`` on the same device, explaining the predicted
      class; it copies its map to the host. On CPU it runs only at batch 1 by default
      (``--reference-max-batch``), once after a warm-up call on one image: at batch 16 one
      ResNet-50 call takes minutes.
    * Each time is the median over ``--repeats`` calls (``time.perf_counter``) after
      ``--warmup`` calls, divided by the batch size. onnxruntime and torch get the same number
      of intra-op threads (``--threads``, default every CPU this process may use).
    * augment: the time of ``fg_onnx.augment(path)`` (with ``provider="cpu"`` on CPU, as
      ``fg-onnx explain`` augments for a CPU session; load, rewrite, checker) in a fresh
      process; rewrite memory: its peak RSS increase over the process before the call,
      divided by the model file size.
    * completeness: the largest |Σ x·∇x + Σ bias·∇bias − score| / |score| over the batch, from
      the saliency model's own outputs (float32: rounding only; float16 on CPU: under
      float16 rounding as tools/float16_emulation.py emulates it, since onnxruntime's CPU
      provider computes float16 graphs in float32).
    * ``--precision float16``: the model is augmented with ``precision="float16"`` and the
      forward time is that of the original converted the same way
      (``fg_onnx.graph.float16.to_float16``), so the ratio compares float16 with float16.
      Worth it on CUDA only: onnxruntime's CPU provider computes float16 graphs in float32.
    * ref diff: max |saliency − reference| / max |reference| over the batch, a check that both
      compute the same maps. Expect float32 noise (ReLU masks flipped by rounding in deep
      random networks), and a real difference where a Conv with its own bias feeds a
      BatchNorm: the export folds them into one tap, the reference keeps two (torchvision's
      convolutions before a BatchNorm have no bias, and neither have the tiny model's).
    * Workers import fg_onnx from the checkout these tools belong to (PYTHONPATH ahead of an
      installed fg-onnx). ``--baseline DIR`` (another checkout, e.g. ``git worktree add
      /tmp/old main``) also augments every model with DIR's fg_onnx; the interleaved process
      then calls the baseline's saliency model in the same round as the forward and the
      current saliency model (the two saliency calls in turn first), so that drift on a shared
      machine cancels from their ratio, and a second table shows both times, both rewrites,
      their peak memory and completeness, and the largest difference of their maps. Both
      saliency models run on this checkout's session code: the comparison is of the graphs
      and the rewrite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_errors import BenchError
from bench_models import check_dependencies
from bench_run import bench_model, check_checkout
from bench_table import Row, comparison_table, markdown_table, profile_report

DEFAULT_MODELS = ("resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0")
DEFAULT_BATCHES = {"cpu": (1, 16), "cuda": (1, 16, 64)}
QUICK: dict[str, Any] = {"models": ("resnet50",), "batch_sizes": (1, 16), "repeats": 2, "warmup": 1}


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,16, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; defaults depend on --device and --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda s: tuple(m for m in s.split(",") if m),
                        help=f"comma-separated torchvision names or 'tiny' "
                             f"(default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch-sizes", type=_int_list,
                        help="comma-separated (default 1,16 on CPU, 1,16,64 on CUDA)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("float32", "float16"), default="float32",
                        help="float16: both the forward and the saliency model in float16 "
                             "(fg-onnx augment --precision float16)")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default 1)")
    parser.add_argument("--reference-repeats", type=int,
                        help="timed reference calls (default 1 on CPU, where one call at batch "
                             "16 takes minutes, else --repeats)")
    parser.add_argument("--reference-max-batch", type=int,
                        help="run the reference only up to this batch size (default 1 on CPU: "
                             "its memory and time grow fast, e.g. ResNet-50 at batch 16 needs "
                             "minutes per call; unlimited on CUDA)")
    parser.add_argument("--augment-repeats", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="intra-op threads of onnxruntime and torch (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="print per-op-type kernel time of the saliency sessions")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: resnet50, batch 1 and 16, 2 repeats")
    parser.add_argument("--out", type=Path, help="also write the table (.md) or all data (.json)")
    parser.add_argument("--baseline", type=Path,
                        help="another fg-onnx checkout: also time the models its fg_onnx "
                             "augments, alternately with this checkout's, and print both")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    args.models = args.models or quick.get("models", DEFAULT_MODELS)
    args.batch_sizes = args.batch_sizes or quick.get("batch_sizes", DEFAULT_BATCHES[args.device])
    args.repeats = max(1, args.repeats or quick.get("repeats", 3))
    args.warmup = max(0, args.warmup if args.warmup is not None else quick.get("warmup", 1))
    on_cpu = args.device == "cpu"
    args.reference_repeats = max(1, args.reference_repeats or (1 if on_cpu else args.repeats))
    if args.reference_max_batch is None:
        args.reference_max_batch = 1 if on_cpu else max(args.batch_sizes)
    return args


def _check_device(device: str) -> None:
    if device != "cuda":
        return
    from fg_onnx.errors import FgOnnxError
    from fg_onnx.runtime.providers import candidate_providers, nvidia_driver_present

    try:
        candidate_providers("cuda")
    except FgOnnxError as exc:
        raise BenchError(str(exc)) from exc
    if not nvidia_driver_present():
        raise BenchError("--device cuda: this machine has no NVIDIA driver")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints the table; 2 when it cannot run."""
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rows: list[Row] = []
    try:
        check_dependencies(args.models)
        _check_device(args.device)
        if args.baseline is not None:
            args.baseline = check_checkout(args.baseline)
        with tempfile.TemporaryDirectory(prefix="fg_bench_") as tmp:
            for name in args.models:
                rows += bench_model(name, args, Path(tmp), log)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(rows)
    if args.baseline is not None:
        table += "\n\n" + comparison_table(rows, str(args.baseline))
    print(table)
    if args.profile:
        print("\n" + profile_report(rows))
    if args.out is not None:
        if args.out.suffix == ".json":
            settings = {k: v for k, v in vars(args).items() if k != "out"}
            data = {"settings": settings, "rows": [r.as_json() for r in rows]}
            args.out.write_text(json.dumps(data, indent=1, default=str))
        else:
            args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
