"""Reading ONNX models from disk with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from fg_onnx.errors import ModelLoadError, one_line

ModelSource = str | os.PathLike[str] | onnx.ModelProto


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Loads a model from a path (external data included) or returns a given ModelProto.

    Raises:
        ModelLoadError: the path is missing, not a file, empty, or not an ONNX model.
    """
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"not a valid ONNX model (protobuf parse failed): {path}") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"not a valid ONNX model (no graph found): {path}")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        # onnx reports a missing or escaping external file as a ValidationError.
        raise ModelLoadError(
            f"external data of {path.name} could not be read from {path.parent}: "
            f"{one_line(exc)}"
        ) from exc
    return model


def external_data_paths(path: Path) -> list[Path]:
    """The external-data files a model file refers to (none when it cannot be parsed)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model: load_model reports it
        return []
    locations = {
        entry.value
        for tensor in onnx.external_data_helper._get_all_tensors(model)
        for entry in tensor.external_data if entry.key == "location"
    }
    return [path.parent / location for location in sorted(locations)]
