"""Which onnxruntime package is installed: one line saying what to do when it is not right.

Installations are simulated (the import blocked, package metadata faked), never changed."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime import install

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"


def _installed(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    def version(name: str) -> str:
        if name in names:
            return "1.0"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_neither_package_names_both_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(FgOnnxError) as caught:
        install.import_onnxruntime()
    message = str(caught.value)
    assert "pip install onnxruntime" in message and "onnxruntime-gpu[cuda,cudnn]" in message
    assert "fg-onnx[cpu]" in message and "\n" not in message


def test_both_packages_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "onnxruntime", "onnxruntime-gpu")
    note = install.conflict_note()
    assert note is not None and "\n" not in note
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in note
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FgOnnxError, match=r"cannot be imported.*pip uninstall -y onnxruntime"):
        install.import_onnxruntime()


def test_one_package_is_no_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "onnxruntime-gpu")
    assert install.conflict_note() is None
    assert install.installed_runtimes() == ["onnxruntime-gpu"]


NO_RUNTIME = """
import importlib.metadata, sys
sys.modules["onnxruntime"] = None
def version(name):
    raise importlib.metadata.PackageNotFoundError(name)
importlib.metadata.version = version
"""


def _without_runtime(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NO_RUNTIME + code], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_without_onnxruntime_augment_works_and_explain_says_what_to_install(
        tmp_path: Path) -> None:
    out = tmp_path / "model.fg.onnx"
    cli = "from fg_onnx.cli.main import main\nsys.exit(main({argv!r}))"
    done = _without_runtime(cli.format(argv=["augment", str(SAMPLE), "-o", str(out)]), tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.exists()
    for argv in (["explain", str(SAMPLE), str(tmp_path), "-o", str(tmp_path / "o")],
                 ["evaluate", "--help"]):
        done = _without_runtime(cli.format(argv=argv), tmp_path)
        assert done.returncode == 2
        assert done.stderr.startswith("fg-onnx: error: this needs ONNX Runtime")
        assert done.stderr.count("\n") == 1 and "fg-onnx[cpu]" in done.stderr
    assert not (tmp_path / "o").exists()
    api = ("import fg_onnx\nassert 'FullGrad' in dir(fg_onnx)\n"
           "try:\n    fg_onnx.FullGrad\nexcept fg_onnx.FgOnnxError as exc:\n    print(exc)")
    done = _without_runtime(api, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("this needs ONNX Runtime")
