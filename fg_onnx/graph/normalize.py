"""Bringing any model to the form the gradient rules expect: opset >= 17, shapes inferred."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from fg_onnx.errors import ModelLoadError, UnsupportedModelError, one_line
from fg_onnx.graph.control import inline_static_control_flow
from fg_onnx.graph.fold import fold_constants, fold_static_shapes
from fg_onnx.graph.fused import expand_fused_ops
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, node_attributes, opset_of
from fg_onnx.graph.legacy import (
    correct_resize_shapes,
    reject_runtime_shape_disagreements,
    restore_legacy_resizes,
    set_legacy_nearest_rounding,
)
from fg_onnx.graph.propagation import infer_with_data_propagation
from fg_onnx.graph.save import check_model, without_weights

T = TypeVar("T")
MIN_OPSET = 17
# Scatter-add of MaxPool indices needs ScatterElements(reduction="add"), opset >= 16; 17 adds
# LayerNormalization, which exporters use from then on.


def upgrade_opset(model: onnx.ModelProto,
                  target: int = MIN_OPSET) -> tuple[onnx.ModelProto, list[str]]:
    """Returns the model converted to ``target`` when its default-domain opset is older, and
    the outputs of old nearest-neighbour Resizes whose rounding is still to be set
    (fg_onnx.graph.legacy)."""
    current = opset_of(model)
    if current == 0:
        raise ModelLoadError("model imports no ai.onnx opset; it is not a usable ONNX graph")
    if current >= target:
        return model, []
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        raise UnsupportedModelError(
            f"could not upgrade the model from opset {current} to {target}: {one_line(exc)}"
        ) from exc
    _keep_other_domains(model, converted)
    return converted, restore_legacy_resizes(model, converted)


def _keep_other_domains(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    known = {entry.domain for entry in converted.opset_import}
    for entry in original.opset_import:
        if entry.domain not in DEFAULT_DOMAINS and entry.domain not in known:
            converted.opset_import.append(entry)


# onnxruntime 1.2x-1.3x reads IR versions up to 10-13; onnx's helpers stamp newer ones.
COMPATIBLE_IR_VERSION = 10


OLDEST_SEPARATE_INITIALIZER_IR = 4
"""Before IR version 4 every initializer had to be a graph input; the augment pass adds
initializers that are not."""


def raise_old_ir_version(model: onnx.ModelProto) -> None:
    """Raises IR version 3 (old model-zoo files) to 4, which only relaxes that rule."""
    if model.ir_version < OLDEST_SEPARATE_INITIALIZER_IR:
        model.ir_version = OLDEST_SEPARATE_INITIALIZER_IR


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


def checker_error(model: onnx.ModelProto) -> ModelLoadError | None:
    """onnx.checker's complaint about the user's model, or None when it passes.

    Not a gate: many working exports break some rule (untyped outputs, for example). It names
    the real cause when augmenting an invalid model fails. Models over 2 GB are checked
    without their weights (protobuf cannot serialise them whole).
    """
    try:
        check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        return ModelLoadError(f"not a valid ONNX model: onnx.checker says: {one_line(exc)}")
    return None


def blaming_invalid_input(model: onnx.ModelProto, step: Callable[[onnx.ModelProto], T]) -> T:
    """Runs ``step(model)``; when it fails on a model that onnx.checker rejects, raises the
    checker's complaint (the cause) instead of the failure it led to."""
    try:
        return step(model)
    except ModelLoadError:
        raise
    except Exception as exc:
        invalid = checker_error(model)
        if invalid is None:
            raise
        raise invalid from exc


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Runs ONNX shape inference (with data propagation) and annotates ``model`` in place.

    Inference runs on a copy without the weights (shape constants stay) and the results are
    copied back: models over 2 GB cannot be serialised whole, and for the others this avoids
    two extra copies of the weights (the rewrite's memory peak).
    """
    inferred = _inferred(model)
    if inferred is None:
        return model  # still too large: rules fall back to the shapes the exporter recorded
    for _ in range(INFERENCE_ROUNDS):  # again past what the corrections fixed
        typed = _type_shape_preserving_outputs(inferred)
        _copy_types(model, inferred)
        if not correct_resize_shapes(model) and not typed:
            break
        inferred = _inferred(model) or inferred
    else:
        _copy_types(model, inferred)
    return model


INFERENCE_ROUNDS = 4


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto | None:
    weightless = without_weights(model)
    inferred = _run_inference(weightless)
    if inferred is not None and _has_open_dims(inferred):
        _fill_batch_independent_dims(weightless, inferred)
    return inferred


def _run_inference(model: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        return infer_with_data_propagation(model)
    except ValueError:
        return None
    except onnx.shape_inference.InferenceError as exc:
        raise UnsupportedModelError(f"shape inference failed: {one_line(exc)}") from exc


TRIAL_BATCHES = (7, 13)
"""Concrete batch sizes shape inference also runs at: a dim that comes out the same at both
does not depend on the batch. ONNX's symbolic inference cannot divide a symbolic batch, so a
Reshape to [batch, C, -1] loses its last dim (YOLO heads); at a concrete batch it does not."""


def _has_open_dims(model: onnx.ModelProto) -> bool:
    return any(not value.type.tensor_type.HasField("shape")
               or any(not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
               for value in model.graph.value_info if value.type.HasField("tensor_type"))


def trial_types(weightless: onnx.ModelProto, sizes: tuple[int, ...] = TRIAL_BATCHES,
                axis: int = 0, inputs: tuple[str, ...] | None = None,
                ) -> list[dict[str, onnx.ValueInfoProto]] | None:
    """Every tensor's inferred type (value_info and graph outputs, by name) at each of
    ``sizes`` for the symbolic dim ``axis`` (default: the batch) of the graph inputs
    (``inputs``, default all), for a model without its weights; None where no input has that
    dim open, or inference fails or contradicts a concrete size."""
    trials = []
    for size in sizes:
        trial = onnx.ModelProto()
        trial.CopyFrom(weightless)
        if not _set_symbolic_dim(trial, axis, size, inputs):
            return None
        try:
            result = _run_inference(trial)
        except UnsupportedModelError:
            return None  # the concrete size contradicts the graph
        if result is None:
            return None
        trials.append({v.name: v for v in [*result.graph.value_info, *result.graph.output]})
    return trials


def _fill_batch_independent_dims(weightless: onnx.ModelProto,
                                 inferred: onnx.ModelProto) -> None:
    """Gives the open dims of ``inferred``'s value_info the values they take at every one of
    TRIAL_BATCHES, in place, where the graph inputs have a symbolic batch (dim 0)."""
    trials = trial_types(weightless)
    if trials is None:
        return  # keep what symbolic inference has
    inputs = {d.dim_param for v in weightless.graph.input
              for d in v.type.tensor_type.shape.dim if d.dim_param}
    for value in inferred.graph.value_info:
        shapes = [trial.get(value.name) for trial in trials]
        if all(s is not None and s.type.HasField("tensor_type") for s in shapes):
            _fill_dims(value, [known_dims(s) for s in shapes if s is not None], inputs)


def _set_symbolic_dim(model: onnx.ModelProto, axis: int, size: int,
                      inputs: tuple[str, ...] | None) -> bool:
    """Sets the symbolic dim ``axis`` of the graph inputs (``inputs``, default every one) to
    ``size``; False when none has it open."""
    weights = {t.name for t in model.graph.initializer}
    changed = False
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in weights or (inputs is not None and value.name not in inputs):
            continue
        if len(dims) > axis and not dims[axis].HasField("dim_value"):
            dims[axis].Clear()
            dims[axis].dim_value = size
            changed = True
    del model.graph.value_info[:]
    return changed


def known_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """A tensor type's dims (None for open ones), or None when it has no shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _fill_dims(value: onnx.ValueInfoProto, trial_dims: list[list[int | None] | None],
               input_params: set[str]) -> None:
    tensor = value.type.tensor_type
    known = trial_dims[0]
    if known is None or any(d is None or len(d) != len(known) for d in trial_dims):
        return
    if not tensor.HasField("shape"):
        for _ in known:
            tensor.shape.dim.add()
    if len(tensor.shape.dim) != len(known):
        return
    for i, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") or dim.dim_param in input_params:
            continue
        values = {d[i] for d in trial_dims if d is not None}
        if len(values) == 1 and None not in values:
            dim.Clear()
            dim.dim_value = int(values.pop())  # type: ignore[arg-type]


def _copy_types(model: onnx.ModelProto, inferred: onnx.ModelProto) -> onnx.ModelProto:
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for mine, theirs in zip(model.graph.output, inferred.graph.output, strict=True):
        mine.type.CopyFrom(theirs.type)
    return model


SHAPE_PRESERVING_OPS = frozenset({"GroupNormalization"})
"""Ops whose output is shaped like their first input and that onnx's shape inference can
leave untyped (GroupNormalization-21 in onnx 1.23), which leaves everything after them
unknown."""


def _type_shape_preserving_outputs(model: onnx.ModelProto) -> bool:
    """Gives the untyped outputs of SHAPE_PRESERVING_OPS their input's type, in place;
    returns whether it gave any."""
    typed = {v.name: v for v in [*model.graph.input, *model.graph.value_info,
                                 *model.graph.output] if v.type.HasField("tensor_type")}
    added = False
    for node in model.graph.node:
        source = typed.get(node.input[0]) if node.input else None
        if node.op_type not in SHAPE_PRESERVING_OPS or source is None or node.output[0] in typed:
            continue
        value = onnx.ValueInfoProto()
        value.CopyFrom(source)
        value.name = node.output[0]
        model.graph.value_info.append(value)
        typed[value.name] = value
        added = True
    return added


QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearLeakyRelu",
    "QLinearSigmoid", "QLinearSoftmax", "QGemm", "QAttention", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "MatMulNBits",
})


def fold_dequantized_weights(model: onnx.ModelProto) -> int:
    """Replaces DequantizeLinear of constant tensors (QDQ weights) by float initializers, in
    place; returns how many. onnx's reference evaluator, which :func:`fold_constants` uses,
    lacks DequantizeLinear before opset 19."""
    info = GraphInfo(model)
    kept, folded = [], 0
    for node in model.graph.node:
        value = _dequantized(node, info) if node.op_type == "DequantizeLinear" else None
        if value is None:
            kept.append(node)
            continue
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return folded


def _dequantized(node: onnx.NodeProto, info: GraphInfo) -> np.ndarray | None:
    """``(q - zero_point) * scale`` of a constant DequantizeLinear (per tensor or per axis)."""
    names = [*node.input, "", ""][:3]
    q, scale = info.const(names[0]), info.const(names[1])
    zero = info.const(names[2]) if names[2] else np.zeros((), np.int64)
    attrs = node_attributes(node)
    if q is None or scale is None or zero is None or attrs.get("block_size", 0):
        return None  # computed input, or blocked quantisation: left to the quantized check
    if scale.ndim == 1 and q.ndim > 0:
        axis = int(attrs.get("axis", 1)) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    elif scale.ndim > 1:
        return None
    real = (q.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)
    return real.astype(scale.dtype)


def reject_quantized(model: onnx.ModelProto) -> None:
    """Refuses models that still quantise after constant folding.

    Dequantised constant weights are folded into float initializers before this runs, so
    only quantisation of activations (QDQ pairs, QLinear* and integer ops) is left: its
    rounding has a zero gradient almost everywhere, and a straight-through substitute would
    explain a different network than the one that runs.
    """
    found = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    if found:
        shown = ", ".join(f"{n.op_type} at node {n.name or '<unnamed>'}" for n in found[:3])
        more = f", +{len(found) - 3} more" if len(found) > 3 else ""
        raise UnsupportedModelError(
            f"quantized models are not supported ({shown}{more}); explain the float model "
            "the quantized one was made from"
        )


SHAPE_FOLDING_ROUNDS = 64


def normalize(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """Upgrades the opset if needed, folds constant-only nodes and infers shapes; the input
    model is modified only with ``in_place`` (which saves a copy of the weights)."""
    if in_place:
        copy = model
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    lower_ir_version(copy)
    raise_old_ir_version(copy)
    upgraded, legacy_nearest = upgrade_opset(copy)
    fold_dequantized_weights(upgraded)
    fold_constants(upgraded)
    reject_quantized(upgraded)
    inferred = infer_shapes(upgraded)
    if expand_fused_ops(inferred):  # with the shapes known, then inferred past them
        inferred = infer_shapes(inferred)
    for _ in range(SHAPE_FOLDING_ROUNDS):  # each round can fix the shapes the next needs
        # A condition or trip count folded in one round decides its If or Loop in the next.
        if not fold_static_shapes(inferred) and not inline_static_control_flow(inferred):
            break
        fold_constants(inferred)
        inferred = infer_shapes(inferred)
    set_legacy_nearest_rounding(inferred, legacy_nearest)
    reject_runtime_shape_disagreements(inferred)
    return inferred
