"""Choosing the onnxruntime execution provider and saying which one really runs.

onnxruntime is imported on first use (``fg_onnx.runtime.install``): the module's names and
types serve the command line before it knows whether a command needs onnxruntime."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from fg_onnx.errors import FgOnnxError, one_line
from fg_onnx.runtime.install import import_onnxruntime

if TYPE_CHECKING:
    import onnxruntime as ort

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_DEFAULT_LOG_SEVERITY = 2


@dataclass(frozen=True)
class ProviderReport:
    """Which provider runs the model, and why if it is not the one asked for."""

    requested: Device
    active: str
    note: str | None = None

    @property
    def on_cuda(self) -> bool:
        """Whether the CUDA provider runs the model."""
        return self.active == CUDA


def _ort() -> ModuleType:
    return import_onnxruntime()


def _preload_cuda_libraries() -> None:
    # onnxruntime-gpu >= 1.21 can load cuDNN/cuBLAS from the nvidia-* wheels; without this
    # the CUDA provider fails to load on machines that have them only as wheels.
    preload = getattr(_ort(), "preload_dlls", None)
    if preload is None:
        return
    # It prints one line per library it cannot find; the report says what matters.
    with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
          contextlib.suppress(Exception)):
        preload()


def nvidia_driver_present() -> bool:
    """False when this Linux machine certainly has no NVIDIA driver (no device node)."""
    if not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def candidate_providers(device: Device, available: list[str] | None = None) -> list[str]:
    """The providers to ask onnxruntime for, best first."""
    available = _ort().get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA not in available:
        if device == "cuda":
            raise FgOnnxError(
                "--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
        return [CPU]
    return [CUDA, CPU]


def planned_providers(device: Device) -> tuple[list[str], str | None]:
    """The providers a session for ``device`` will ask for, and why CUDA is left out when
    onnxruntime has it but the machine cannot use it (None otherwise)."""
    providers = candidate_providers(device)
    if CUDA in providers and device == "auto" and not nvidia_driver_present():
        return [CPU], ("CUDA provider is installed but this machine has no NVIDIA driver; "
                       "running on CPU")
    return providers, None


def open_session(model: bytes | str, device: Device = "auto",
                 options: ort.SessionOptions | None = None,
                 ) -> tuple[ort.InferenceSession, ProviderReport]:
    """An InferenceSession on the best usable provider, and a report of what runs.

    A CUDA provider that onnxruntime lists but cannot load (missing driver or libraries) is
    reported in the note; with ``device="cuda"`` it is an error instead of a CPU fallback.
    """
    runtime = _ort()
    providers, note = planned_providers(device)
    if CUDA in providers:
        _preload_cuda_libraries()
        # onnxruntime logs a provider that fails to load through its default logger; the
        # report below says it in one line instead.
        runtime.set_default_logger_severity(4)
    options = options or runtime.SessionOptions()
    # Our own report replaces onnxruntime's provider warnings, and errors reach the user as
    # one line from the exception instead of a log record as well.
    options.log_severity_level = 4
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = runtime.InferenceSession(model, options, providers=providers)
    except Exception as exc:
        raise FgOnnxError(f"onnxruntime could not load the model: {one_line(exc)}") from exc
    finally:
        runtime.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)
    active = session.get_providers()[0]
    if CUDA in providers and active != CUDA:
        if device == "cuda":
            raise FgOnnxError(
                "--device cuda: the CUDA provider failed to load (no GPU, driver or CUDA/cuDNN "
                "libraries); run with --device cpu or fix the CUDA installation"
            )
        note = "CUDA provider is installed but failed to load (no usable GPU or CUDA " \
               "libraries); running on CPU"
    return session, ProviderReport(requested=device, active=active, note=note)
