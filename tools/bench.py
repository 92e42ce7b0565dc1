"""Benchmarks fg-onnx: FullGrad saliency time against the model's own forward pass and against a
PyTorch FullGrad, plus the cost of the rewrite.

Usage (torch and torchvision required; ``--models tiny`` needs torch only)::

    python tools/bench.py [--models resnet50,vgg16_bn] [--batch-sizes 1,16] [--device cpu]
                          [--repeats 3] [--warmup 1] [--skip-reference] [--out table.md]
    python tools/bench.py --quick          # 1 model, batch 1 and 16, 2 repeats

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
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
DEFAULT_MODELS = ("resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0")
DEFAULT_BATCHES = {"cpu": (1, 16), "cuda": (1, 16, 64)}
SETTLE_S = 0.5  # pause before each interleaved call (see worker_interleaved)
QUICK = {"models": ("resnet50",), "batch_sizes": (1, 16), "repeats": 2, "warmup": 1}
TINY_SIZE = 32
WORKER_FLAG = "--worker"
COLUMNS = ("model", "batch", "forward ms/img", "saliency ms/img", "saliency/forward",
           "reference ms/img", "reference/saliency", "augment s", "rewrite mem/model size",
           "ref diff", "completeness", "peak RSS MiB fwd/sal/ref")


class BenchError(Exception):
    """A one-line reason why the benchmark cannot run."""


# ---------------------------------------------------------------- models (torch, lazily) --

def build_torch_model(name: str) -> Any:
    """An eval-mode torch model with random weights (seeded by the caller) and random
    BatchNorm statistics, so that its folded biases are not zero (as in a trained model)."""
    import torch
    import torch.nn as nn
    from matrix_torch import set_batchnorm_statistics

    if name == "tiny":
        # Conv-BN-ReLU, max pool, stride-2 conv, global pool, Linear: the tap kinds of a CNN.
        model: nn.Module = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )
    else:
        import torchvision.models

        factory = getattr(torchvision.models, name, None)
        if not callable(factory):
            raise BenchError(f"unknown model {name!r}: use 'tiny' or a torchvision.models name")
        model = factory(weights=None)
    set_batchnorm_statistics(model, torch.Generator().manual_seed(1))
    return model.eval()


def export_model(name: str, folder: Path, image_size: int, seed: int) -> tuple[Path, Path]:
    """Exports ``name`` to ONNX and saves its state dict (for the reference) in ``folder``."""
    import torch

    torch.manual_seed(seed)
    model = build_torch_model(name)
    onnx_path, state_path = folder / f"{name}.onnx", folder / f"{name}.pt"
    torch.save(model.state_dict(), state_path)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, image_size, image_size),), str(onnx_path),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return onnx_path, state_path


def check_dependencies(models: Sequence[str]) -> None:
    """Raises BenchError naming what is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise BenchError("torch is not installed (pip install torch)") from exc
    if any(m != "tiny" for m in models):
        try:
            import torchvision  # noqa: F401
        except ImportError as exc:
            raise BenchError("torchvision is not installed (pip install torchvision); "
                             "--models tiny needs torch only") from exc


# ------------------------------------------------------------------------------ workers --

def _peak_rss_mib() -> float:
    """This process's resident set size high-water mark, MiB.

    Linux carries ``ru_maxrss`` over fork and exec, so a child started by a parent holding
    torch would report at least the parent's size; VmHWM belongs to the process's own memory
    map. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    unit = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit


def _gpu_mib() -> float | None:
    """This process's device memory per nvidia-smi, or None where it cannot say."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def _timed(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _images(spec: dict[str, Any]) -> np.ndarray:
    shape = (spec["batch"], 3, spec["image_size"], spec["image_size"])
    return np.random.default_rng(spec["seed"]).standard_normal(shape).astype(np.float32)


def worker_augment(spec: dict[str, Any]) -> dict[str, Any]:
    """Times fg_onnx.augment on the file and measures its peak RSS increase."""
    import onnx

    import fg_onnx

    before = _peak_rss_mib()
    times, model = [], None
    for _ in range(max(1, spec["repeats"])):
        model = None  # the previous result must not stay alive during the next call
        start = time.perf_counter()
        # as fg-onnx explain does for a CPU-only session (see FullGrad)
        model = fg_onnx.augment(spec["model"], provider="cpu" if spec["device"] == "cpu"
                                else "any", precision=spec["precision"])
        times.append(time.perf_counter() - start)
    peak = _peak_rss_mib()
    assert model is not None
    onnx.save(model, spec["out"])
    if spec["precision"] == "float16":
        from fg_onnx.graph.float16 import to_float16

        onnx.save(to_float16(onnx.load(spec["model"])), spec["forward_out"])
    return {"times": times, "rss_increase_mib": peak - before,
            "model_mib": os.path.getsize(spec["model"]) / 2**20}


def _ort_call(spec: dict[str, Any], model: str, kind: str,
              profile_dir: str | None = None) -> tuple[Any, Any, Callable[[], list[np.ndarray]]]:
    """Opens ``model`` as the ``kind`` ("forward" or "saliency") measurement runs it:
    (session, provider report, one inference call)."""
    import onnxruntime as ort

    from fg_onnx.fullgrad import contract
    from fg_onnx.runtime.providers import open_session

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / kind)
    session, report = open_session(model, spec["device"], options)
    x = _images(spec)
    feeds: dict[str, np.ndarray] = {session.get_inputs()[0].name: x}
    if kind == "saliency":
        feeds[contract.TARGET] = np.full(len(x), -1, dtype=np.int64)
        names = [contract.SALIENCY, contract.SCORE]
    else:
        names = [o.name for o in session.get_outputs()]
    return session, report, _runner(session, report.on_cuda, names, feeds)


def worker_ort(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs the original (forward) or augmented (saliency) model alone: its peak memory, the
    map it computes and, with ``--profile``, where its time goes."""
    session, report, call = _ort_call(spec, spec["model"], spec["kind"], spec.get("profile_dir"))
    times = _timed(call, spec["warmup"], spec["repeats"])
    result: dict[str, Any] = {"times": times, "provider": report.active}
    if spec["kind"] == "saliency" and spec.get("map_out"):
        np.save(spec["map_out"], call()[0])
        result["completeness"] = _completeness_error(spec, session)
    if report.on_cuda:
        result["gpu_mib"] = _gpu_mib()
    if spec.get("profile_dir"):
        result["profile"] = _op_times(session.end_profiling(), spec["warmup"] + spec["repeats"])
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def worker_interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Times forward and saliency calls alternately in one process, so that both times see
    the same machine: on a shared host, load that comes and goes between two separate
    measurements moves their ratio by tens of percent."""
    _, _, forward = _ort_call(spec, spec["forward_model"], "forward")
    _, _, saliency = _ort_call(spec, spec["model"], "saliency")
    for _ in range(spec["warmup"]):
        forward()
        saliency()
    times: dict[str, list[float]] = {"forward": [], "saliency": []}
    for _ in range(spec["repeats"]):
        for kind, call in (("forward", forward), ("saliency", saliency)):
            # The other session's intra-op threads spin for a while after its call; on few
            # cores they would take this call's CPU (measured: ResNet-50's batch-1 forward
            # 2.4x slower right after a saliency call).
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            call()
            times[kind].append(time.perf_counter() - start)
    return {"times": times}


def _completeness_error(spec: dict[str, Any], session: Any) -> float:
    """The largest relative completeness error of the augmented model over the batch; for a
    float16 model on CPU under float16 rounding (float16_emulation), which onnxruntime's CPU
    provider would hide."""
    import onnx

    from fg_onnx.fullgrad import contract

    x = _images(spec)
    feeds = {session.get_inputs()[0].name: x,
             contract.TARGET: np.full(len(x), -1, dtype=np.int64)}
    names = [contract.INPUT_GRAD, contract.BIAS_TOTAL, contract.SCORE]
    if spec["device"] == "cpu" and spec.get("precision") == "float16":
        sys.path.insert(0, str(TOOLS))
        from float16_emulation import run_emulated

        outputs = run_emulated(onnx.load(spec["model"]), feeds)
        gradient, bias_total, score = (outputs[name] for name in names)
    else:
        gradient, bias_total, score = session.run(names, feeds)
    return float(contract.completeness_error(gradient, x, bias_total, score).max())


def _runner(session: Any, on_cuda: bool, names: list[str],
            feeds: dict[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
    """One inference call, as fg_onnx.runtime.session.FullGrad makes it."""
    if not on_cuda:
        return lambda: session.run(names, feeds)  # type: ignore[no-any-return]
    import onnxruntime as ort

    def call() -> list[np.ndarray]:
        # IO binding keeps intermediates on the GPU; the input is uploaded once per call.
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return [np.asarray(v) for v in binding.copy_outputs_to_cpu()]

    return call


def _op_times(profile_path: str, runs: int) -> dict[str, float]:
    """Milliseconds per run spent in each op type, from an onnxruntime profile."""
    events = json.loads(Path(profile_path).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event.get("args", {}).get("op_name", "?")] += event.get("dur", 0) / 1000
    Path(profile_path).unlink(missing_ok=True)
    return {op: ms / runs for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def worker_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Times the PyTorch FullGrad on the same images and device."""
    import torch

    sys.path.insert(0, str(TOOLS))
    from reference_fullgrad import ReferenceFullGrad

    torch.set_num_threads(spec["threads"])
    model = build_torch_model(spec["name"])
    model.load_state_dict(torch.load(spec["state"], weights_only=True))
    device = torch.device(spec["device"])
    fullgrad = ReferenceFullGrad(model.to(device))
    x = torch.from_numpy(_images(spec)).to(device)

    def call() -> np.ndarray:
        # .cpu() waits for the device, like the saliency call's download.
        return fullgrad(x).cpu().numpy()  # type: ignore[no-any-return]

    # A call takes minutes on a CPU at batch 16: warm up (threads, allocator, kernels) on one
    # image instead of the whole batch.
    _timed(lambda: fullgrad(x[:1]).cpu(), spec["warmup"], 0)
    times = _timed(call, 0, spec["repeats"])
    result: dict[str, Any] = {"times": times}
    if spec.get("map_out"):
        np.save(spec["map_out"], call())
    if device.type == "cuda":
        result["gpu_mib"] = _gpu_mib()
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "augment": worker_augment, "forward": worker_ort, "saliency": worker_ort,
    "interleaved": worker_interleaved, "reference": worker_reference,
}


def run_worker(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Runs one measurement in a fresh interpreter and returns its result."""
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG,
                           json.dumps(spec), str(result_path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not result_path.exists():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise BenchError(f"{spec['kind']} measurement of {spec.get('model') or spec.get('name')}"
                         f" (batch {spec.get('batch', '-')}) failed: {lines[-1]}")
    return json.loads(result_path.read_text())  # type: ignore[no-any-return]


def worker_main(argv: Sequence[str]) -> int:
    """Entry point of a measuring subprocess: ``--worker SPEC_JSON RESULT_PATH``."""
    spec = json.loads(argv[0])
    result = WORKERS[spec["kind"]](spec)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------ driver --

@dataclass
class Row:
    """One model and batch size."""

    model: str
    batch: int
    forward_ms: float
    saliency_ms: float
    reference_ms: float | None
    augment_s: float
    rewrite_ratio: float
    ref_diff: float | None
    completeness: float | None = None
    precision: str = "float32"
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    gpu_mib: dict[str, float | None] = field(default_factory=dict)
    profile: dict[str, float] | None = None

    @property
    def saliency_over_forward(self) -> float:
        """Saliency time / forward time."""
        return self.saliency_ms / self.forward_ms

    @property
    def reference_over_saliency(self) -> float | None:
        """Reference time / saliency time."""
        return None if self.reference_ms is None else self.reference_ms / self.saliency_ms

    def cells(self) -> list[str]:
        """The markdown table cells, in COLUMNS order."""
        def num(value: float | None, fmt: str) -> str:
            if value is None:
                return "—"
            return format(value, ".0f" if fmt == ".3g" and abs(value) >= 1000 else fmt)

        rss = "/".join(num(self.peak_rss_mib.get(k), ".0f")
                       for k in ("forward", "saliency", "reference"))
        return [self.model, str(self.batch), num(self.forward_ms, ".3g"),
                num(self.saliency_ms, ".3g"), num(self.saliency_over_forward, ".3g"),
                num(self.reference_ms, ".3g"), num(self.reference_over_saliency, ".3g"),
                num(self.augment_s, ".3g"), num(self.rewrite_ratio, ".3g"),
                num(self.ref_diff, ".1e"), num(self.completeness, ".1e"), rss]

    def as_json(self) -> dict[str, Any]:
        """Everything, ratios included."""
        return {**asdict(self), "saliency_over_forward": self.saliency_over_forward,
                "reference_over_saliency": self.reference_over_saliency}


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def _per_image_ms(times: list[float], batch: int) -> float:
    return statistics.median(times) / batch * 1000


def _ref_diff(saliency_path: Path, reference_path: Path) -> float | None:
    if not (saliency_path.exists() and reference_path.exists()):
        return None
    ours, theirs = np.load(saliency_path), np.load(reference_path)
    return float(np.abs(ours - theirs).max() / max(float(np.abs(theirs).max()), 1e-12))


def bench_model(name: str, args: argparse.Namespace, folder: Path,
                log: Callable[[str], None]) -> list[Row]:
    """All measurements of one model."""
    size = TINY_SIZE if name == "tiny" else args.image_size
    onnx_path, state_path = export_model(name, folder, size, args.seed)
    augmented = folder / f"{name}.fg.onnx"
    half = args.precision == "float16"
    forward_path = folder / f"{name}.float16.onnx" if half else onnx_path
    aug = run_worker({"kind": "augment", "model": str(onnx_path), "out": str(augmented),
                      "repeats": args.augment_repeats, "device": args.device,
                      "precision": args.precision, "forward_out": str(forward_path)}, folder)
    augment_s = statistics.median(aug["times"])
    log(f"{name}: augment {augment_s:.2f} s, rewrite peak +{aug['rss_increase_mib']:.0f} MiB "
        f"for a {aug['model_mib']:.0f} MiB model")
    rows = []
    for batch in args.batch_sizes:
        common = {"batch": batch, "image_size": size, "seed": args.seed, "device": args.device,
                  "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats}
        sal_map, ref_map = folder / f"{name}_{batch}_sal.npy", folder / f"{name}_{batch}_ref.npy"
        alone = {**common, "warmup": 1, "repeats": 1}  # memory, map and profile
        forward = run_worker({**alone, "kind": "forward", "model": str(forward_path)}, folder)
        saliency = run_worker({**alone, "kind": "saliency", "model": str(augmented),
                               "map_out": str(sal_map), "precision": args.precision,
                               "profile_dir": str(folder) if args.profile else None}, folder)
        timed = run_worker({**common, "kind": "interleaved", "model": str(augmented),
                            "forward_model": str(forward_path)}, folder)["times"]
        reference = None
        if not args.skip_reference and batch <= args.reference_max_batch:
            reference = run_worker({**common, "kind": "reference", "name": name,
                                    "state": str(state_path), "map_out": str(ref_map),
                                    "repeats": args.reference_repeats}, folder)
        measured = {"forward": forward, "saliency": saliency}
        if reference is not None:
            measured["reference"] = reference
        row = Row(
            model=name, batch=batch, forward_ms=_per_image_ms(timed["forward"], batch),
            saliency_ms=_per_image_ms(timed["saliency"], batch),
            reference_ms=None if reference is None else _per_image_ms(reference["times"], batch),
            augment_s=augment_s, rewrite_ratio=aug["rss_increase_mib"] / aug["model_mib"],
            ref_diff=_ref_diff(sal_map, ref_map), completeness=saliency.get("completeness"),
            precision=args.precision,
            peak_rss_mib={k: v["peak_rss_mib"] for k, v in measured.items()},
            gpu_mib={k: v.get("gpu_mib") for k, v in measured.items()},
            profile=saliency.get("profile"))
        log(markdown_table([row]).splitlines()[-1])
        rows.append(row)
    return rows


def profile_report(rows: Sequence[Row], top: int = 8) -> str:
    """Per op type time of the saliency sessions (``--profile``)."""
    lines = []
    for row in rows:
        if not row.profile:
            continue
        total = sum(row.profile.values())
        parts = [f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)"
                 for op, ms in list(row.profile.items())[:top]]
        lines.append(f"{row.model} batch {row.batch}: {total:.1f} ms/run in kernels; "
                     + ", ".join(parts))
    return "\n".join(lines)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_FLAG]:
        return worker_main(argv[1:])
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rows: list[Row] = []
    try:
        check_dependencies(args.models)
        _check_device(args.device)
        with tempfile.TemporaryDirectory(prefix="fg_bench_") as tmp:
            for name in args.models:
                rows += bench_model(name, args, Path(tmp), log)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(rows)
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
