"""The public package surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fg_onnx
from fg_onnx.methods.explainer import Explainer
from fg_onnx.runtime.session import FullGrad


def test_runtime_classes_are_exported_lazily() -> None:
    assert fg_onnx.FullGrad is FullGrad
    assert fg_onnx.Explainer is Explainer
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = fg_onnx.Nope  # type: ignore[attr-defined]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, fg_onnx; print('onnxruntime' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert loaded.stdout.strip() == "False"
