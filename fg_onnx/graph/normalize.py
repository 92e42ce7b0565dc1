"""Bringing any model to the form the gradient rules expect: opset >= 17, shapes inferred."""

from __future__ import annotations

import onnx
from onnx import version_converter

from fg_onnx.errors import ModelLoadError, UnsupportedModelError
from fg_onnx.graph.fold import fold_constants
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


# onnxruntime 1.2x-1.3x reads IR versions up to 10-13; onnx's helpers stamp newer ones.
COMPATIBLE_IR_VERSION = 10


def lower_ir_version(model: onnx.ModelProto) -> None:
    """Lowers a newer IR version to the oldest one the model's opsets allow (>= 10), so that
    models made by recent onnx releases load in older onnxruntime releases."""
    if model.ir_version <= COMPATIBLE_IR_VERSION:
        return
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), True)
    except Exception:
        return
    model.ir_version = max(needed, COMPATIBLE_IR_VERSION)


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
    """Upgrades the opset if needed, folds constant-only nodes and infers shapes; the input
    model is not modified."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    lower_ir_version(copy)
    upgraded = upgrade_opset(copy)
    fold_constants(upgraded)
    return infer_shapes(upgraded)
