"""One timed measurement of the benchmark, in a process of its own so that the peak memory it
reports belongs to that measurement alone (tools/bench.py's docstring has the method).

Usage (tools/bench_run.py starts it)::

    python tools/bench_worker.py SPEC_JSON RESULT_PATH

``SPEC_JSON["kind"]`` names the measurement (WORKERS). fg_onnx is imported from PYTHONPATH,
which the parent points at the checkout whose code the measurement is about.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_memory import gpu_mib, peak_rss_mib
from bench_models import build_torch_model

SETTLE_S = 0.5  # pause before each interleaved call (see worker_interleaved)


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

    # as fg-onnx explain does for a CPU-only session (see FullGrad)
    options: dict[str, Any] = {"provider": "cpu" if spec["device"] == "cpu" else "any"}
    if spec["precision"] != "float32":  # a --baseline checkout may predate the option
        options["precision"] = spec["precision"]
    before = peak_rss_mib()
    times, model = [], None
    for _ in range(max(1, spec["repeats"])):
        model = None  # the previous result must not stay alive during the next call
        start = time.perf_counter()
        model = fg_onnx.augment(spec["model"], **options)
        times.append(time.perf_counter() - start)
    peak = peak_rss_mib()
    assert model is not None
    onnx.save(model, spec["out"])
    if spec["precision"] == "float16" and spec.get("forward_out"):
        from fg_onnx.graph.float16 import to_float16

        onnx.save(to_float16(onnx.load(spec["model"])), spec["forward_out"])
    return {"times": times, "rss_increase_mib": peak - before,
            "model_mib": os.path.getsize(spec["model"]) / 2**20,
            "fg_onnx": str(Path(fg_onnx.__file__).resolve().parent)}


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
        result["gpu_mib"] = gpu_mib()
    if spec.get("profile_dir"):
        result["profile"] = _op_times(session.end_profiling(), spec["warmup"] + spec["repeats"])
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def worker_interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Times forward and saliency calls alternately in one process, so that both times see
    the same machine: on a shared host, load that comes and goes between two separate
    measurements moves their ratio by tens of percent. With a ``baseline_model`` (--baseline)
    its saliency calls join the round, before or after the current model's by turns."""
    calls = {"forward": _ort_call(spec, spec["forward_model"], "forward")[2],
             "saliency": _ort_call(spec, spec["model"], "saliency")[2]}
    if spec.get("baseline_model"):
        calls["baseline"] = _ort_call(spec, spec["baseline_model"], "saliency")[2]
    for _ in range(spec["warmup"]):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {kind: [] for kind in calls}
    for repeat in range(spec["repeats"]):
        order = list(calls)
        if repeat % 2:  # neither saliency model always follows the forward call
            order = order[:1] + order[:0:-1]
        for kind in order:
            # The other session's intra-op threads spin for a while after its call; on few
            # cores they would take this call's CPU (measured: ResNet-50's batch-1 forward
            # 2.4x slower right after a saliency call).
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            calls[kind]()
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
        result["gpu_mib"] = gpu_mib()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "augment": worker_augment, "forward": worker_ort, "saliency": worker_ort,
    "interleaved": worker_interleaved, "reference": worker_reference,
}


def main(argv: Sequence[str]) -> int:
    """Runs the measurement ``argv[0]`` describes and writes its result to ``argv[1]``."""
    spec = json.loads(argv[0])
    result = WORKERS[spec["kind"]](spec)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
