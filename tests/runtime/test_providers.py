"""Execution-provider choice and honest reporting of what runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from fg_onnx.cli.main import main
from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime import providers
from fg_onnx.runtime.providers import CPU, CUDA, candidate_providers, open_session

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"


def test_candidates() -> None:
    assert candidate_providers("cpu", [CUDA, CPU]) == [CPU]
    assert candidate_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert candidate_providers("auto", [CPU]) == [CPU]
    assert candidate_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(FgOnnxError, match="no CUDA provider"):
        candidate_providers("cuda", [CPU])


class _SessionThatLostCuda:
    """What onnxruntime does when the CUDA provider fails to load: it silently uses the CPU."""

    def __init__(self, model: Any, options: Any, providers: list[str]) -> None:
        self.asked = providers

    def get_providers(self) -> list[str]:
        return [CPU]


class _SessionOnCuda(_SessionThatLostCuda):
    def get_providers(self) -> list[str]:
        return list(self.asked)


@pytest.fixture
def cuda_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers, "_preload_cuda_libraries", lambda: None)
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: True)


def test_no_driver_means_cpu_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: False)
    monkeypatch.setattr(ort, "InferenceSession", _SessionOnCuda)
    session, report = open_session(b"model", "auto")
    assert session.asked == [CPU]  # type: ignore[attr-defined]
    assert report.active == CPU and report.note is not None and "no NVIDIA driver" in report.note


@pytest.mark.usefixtures("cuda_listed")
def test_failed_cuda_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "InferenceSession", _SessionThatLostCuda)
    _, report = open_session(b"model", "auto")
    assert report.active == CPU and not report.on_cuda
    assert report.note is not None and "failed to load" in report.note
    with pytest.raises(FgOnnxError, match="--device cuda: the CUDA provider failed to load"):
        open_session(b"model", "cuda")


@pytest.mark.usefixtures("cuda_listed")
def test_working_cuda_has_no_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "InferenceSession", _SessionOnCuda)
    _, report = open_session(b"model", "auto")
    assert report.on_cuda and report.note is None
    _, report = open_session(b"model", "cpu")
    assert report.active == CPU and report.note is None


def test_unloadable_model_is_a_clear_error() -> None:
    with pytest.raises(FgOnnxError, match="onnxruntime could not load the model"):
        open_session(b"not a model", "cpu")


@pytest.mark.parametrize(("available", "device", "noted"), [
    ([CUDA, CPU], "auto", True),  # a GPU build on a machine without a driver
    ([CUDA, CPU], "cpu", False),
    ([CPU], "auto", False),  # the CPU build: nothing to say
])
def test_the_cpu_fallback_note_comes_once_per_run_and_only_where_it_helps(
        available: list[str], device: str, noted: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: False)
    image = str(ROOT / "sample_models" / "images" / "circle.png")
    for argv in (["explain", str(SAMPLE), image, "-o", str(tmp_path / "x")],
                 ["evaluate", str(SAMPLE), image, "--methods", "gradient,grad-cam", "--k", "1",
                  "--deletion-steps", "1", "-o", str(tmp_path / "e")]):
        assert main([*argv, "--device", device]) == 0
        assert capsys.readouterr().err.count("no NVIDIA driver") == (1 if noted else 0)
