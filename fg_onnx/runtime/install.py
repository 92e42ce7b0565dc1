"""Which ONNX Runtime package is installed, and one line saying what to do when it is not right.

fg-onnx leaves the choice to the user (``fg-onnx[cpu]`` or ``fg-onnx[gpu]``), as onnxruntime's
packages all install the same ``onnxruntime`` module: with two of them, one overwrites the
other's files. Nothing here imports onnxruntime until :func:`import_onnxruntime` is called, so
the graph rewrite (``fg-onnx augment``) works without it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from fg_onnx.errors import FgOnnxError, one_line

RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                         "onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-silicon")
"""The packages that install the ``onnxruntime`` module."""

INSTALL_HINT = ("install one: pip install onnxruntime (CPU), or pip install "
                "'onnxruntime-gpu[cuda,cudnn]' (NVIDIA GPUs); the extras fg-onnx[cpu] and "
                "fg-onnx[gpu] install the same")


def installed_runtimes() -> list[str]:
    """The installed packages of ``RUNTIME_DISTRIBUTIONS``, in that order."""
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def conflict_note(installed: list[str] | None = None) -> str | None:
    """One line naming the fix when several onnxruntime packages are installed, else None."""
    installed = installed_runtimes() if installed is None else installed
    if len(installed) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in installed else installed[0]
    names = " ".join(installed)
    return (f"{' and '.join(installed)} are installed together and overwrite each other's "
            f"onnxruntime module; keep one: pip uninstall -y {names} && pip install {keep}")


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line error saying which package to install.

    Raises:
        FgOnnxError: no onnxruntime package is installed, or the installed one cannot be
            imported (two packages over each other, a broken install).
    """
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        installed = installed_runtimes()
        if not installed:
            raise FgOnnxError(f"this needs ONNX Runtime, which is not installed; "
                              f"{INSTALL_HINT}") from None
        fix = conflict_note(installed) or (f"reinstall it: pip install --force-reinstall "
                                           f"{installed[0]}")
        raise FgOnnxError(f"onnxruntime ({installed[0]}) is installed but cannot be imported "
                          f"({one_line(exc)}); {fix}") from None
