"""fg-onnx: FullGrad saliency for any exported ONNX model, on stock ONNX Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fg_onnx.api import augment, augment_with_report
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.augment import AugmentOptions, AugmentResult

if TYPE_CHECKING:
    from fg_onnx.methods.explainer import Explainer
    from fg_onnx.runtime.session import FullGrad
    from fg_onnx.vision.inputs import load_batch

__version__ = "0.1.0"

__all__ = ["AugmentOptions", "AugmentResult", "Explainer", "FgOnnxError", "FullGrad",
           "__version__", "augment", "augment_with_report", "load_batch"]

# The runtime classes load onnxruntime (and load_batch OpenCV); importing them lazily keeps
# `import fg_onnx` (and the rewrite alone) light.
_LAZY = {"FullGrad": "fg_onnx.runtime.session", "Explainer": "fg_onnx.methods.explainer"}
_LAZY_LIGHT = {"load_batch": "fg_onnx.vision.inputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_LIGHT:
        import importlib

        return getattr(importlib.import_module(_LAZY_LIGHT[name]), name)
    if name in _LAZY:
        import importlib
        import warnings

        from fg_onnx.runtime.install import conflict_note, import_onnxruntime

        import_onnxruntime()  # a one-line FgOnnxError naming the package to install
        note = conflict_note()
        if note:
            warnings.warn(note, stacklevel=2)
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fg_onnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazily imported ones (``FullGrad``, ``Explainer``, ...)."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
