"""Bringing any model to the form the gradient rules expect: opset >= 17, shapes inferred."""

from __future__ import annotations

import onnx
from onnx import version_converter

from fg_onnx.errors import ModelLoadError, UnsupportedModelError
from fg_onnx.graph.info import DEFAULT_DOMAINS, opset_of

MIN_OPSET = 17
# Scatter-add of MaxPool indices needs ScatterElements(reduction="add"), opset >= 16; 17 adds
# LayerNormalization, which exporters use from then on.


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET) -> onnx.ModelProto:
    """Returns the model converted to ``target`` when its default-domain opset is older."""
    current = opset_of(model)
    if current == 0:
        raise ModelLoadError("model imports no ai.onnx opset; it is not a usable ONNX graph")
    if current >= target:
        return model
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        raise UnsupportedModelError(
            f"could not upgrade the model from opset {current} to {target}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    _keep_other_domains(model, converted)
    return converted


def _keep_other_domains(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    known = {entry.domain for entry in converted.opset_import}
    for entry in original.opset_import:
        if entry.domain not in DEFAULT_DOMAINS and entry.domain not in known:
            converted.opset_import.append(entry)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Runs ONNX shape inference (with data propagation) and returns the annotated model."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                 data_prop=True)
    except ValueError:
        # Protobufs over 2 GB cannot be serialised for in-memory inference; rules then fall
        # back to the shapes the exporter recorded.
        return model
    except onnx.shape_inference.InferenceError as exc:
        raise UnsupportedModelError(
            f"shape inference failed: {str(exc).splitlines()[0]}"
        ) from exc


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Upgrades the opset if needed and infers shapes; the input model is not modified."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return infer_shapes(upgrade_opset(copy))
