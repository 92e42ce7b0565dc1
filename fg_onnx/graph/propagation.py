"""ONNX shape inference with data propagation, kept from materialising long vectors.

Data propagation evaluates the small integer tensors that shapes are computed from (Shape →
Gather → Concat → Reshape), so that a Reshape to a computed shape gets an inferred output.
But ONNX also propagates through any rank-1 tensor of known length that reaches Cast, Add,
Mul, Concat, Slice, ...: one shape dimension per element, about 150 bytes each. A
flattened [7, 64, 224, 224] activation (a trial batch, or a fixed-batch export) feeding a
Cast took 3 GB, and the float16 VGG-11 graph ran out of memory. No vector that long is a
shape, so such inputs reach their consumers through a Tile of unknown length during the
propagating pass, and their consumers' shapes are taken from a pass without propagation.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

LONG_VECTOR = 4096
"""Rank-1 tensors longer than this never hold a shape (a rank-4096 tensor is none)."""
GUARD_PREFIX = "fg_propagation_guard/"


def infer_with_data_propagation(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model, data_prop=True)`` (lenient), without
    propagating data through long vectors.

    Raises:
        ValueError, onnx.shape_inference.InferenceError: as ONNX's shape inference does.
    """
    plain = _infer(model, data_prop=False)
    guarded = _long_vectors(plain)
    if not guarded:
        return _infer(model, data_prop=True)
    for _ in range(GUARD_ROUNDS):
        inferred = _infer(_guarded(model, guarded), data_prop=True)
        # A guarded vector's own length is inferred with propagation: the ones that come out
        # short (a Reshape to a computed shape) are shapes' business after all.
        values = {v.name: v for v in inferred.graph.value_info}
        short = {name for name in guarded if name in values and _is_short(values[name])}
        if not short:
            break
        guarded -= short
        if not guarded:
            return _infer(model, data_prop=True)
    _drop_guards(inferred)
    _fill_from(inferred, plain)
    return inferred


GUARD_ROUNDS = 3
"""Passes that release guarded vectors found short; those still guarded after the last keep
their consumers' shapes from the pass without propagation."""


def _infer(model: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                             data_prop=data_prop)


def _long_vectors(inferred: onnx.ModelProto) -> set[str]:
    """Rank-1 tensors longer than LONG_VECTOR, and those of unknown length that are not
    integers (the pass without propagation cannot know a flattened activation's length,
    but no float or boolean tensor is a shape)."""
    graph = inferred.graph
    return {value.name for value in [*graph.input, *graph.value_info]
            if _may_be_long(value)}


def _is_short(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return len(dims) == 1 and dims[0].HasField("dim_value") and dims[0].dim_value <= LONG_VECTOR


def _may_be_long(value: onnx.ValueInfoProto) -> bool:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return False
    dims = tensor.shape.dim
    if len(dims) != 1:
        return False
    if dims[0].HasField("dim_value"):
        return bool(dims[0].dim_value > LONG_VECTOR)
    return tensor.elem_type not in INTEGER_TYPES


INTEGER_TYPES = frozenset({
    TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
    TensorProto.UINT64, TensorProto.UINT32, TensorProto.UINT16, TensorProto.UINT8,
})


def _guarded(model: onnx.ModelProto, long_vectors: set[str]) -> onnx.ModelProto:
    """A copy whose nodes read each long vector through a Tile by a graph input's repeats,
    which inference cannot know: the vector reaches them with its length unknown (a Reshape
    would propagate data itself, and an Expand keeps the length)."""
    guarded = onnx.ModelProto()
    guarded.CopyFrom(model)
    graph = guarded.graph
    unknown_repeats = f"{GUARD_PREFIX}repeats"
    graph.input.append(helper.make_tensor_value_info(unknown_repeats, TensorProto.INT64, [1]))
    guards = {name: helper.make_node("Tile", [name, unknown_repeats],
                                     [f"{GUARD_PREFIX}{name}"])
              for name in sorted(long_vectors)}
    made = {output for node in graph.node for output in node.output}
    # Each guard right after the node that makes its tensor: the graph stays sorted.
    ordered = [guard for name, guard in guards.items() if name not in made]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in guards:
                node.input[i] = guards[name].output[0]
        ordered += [node, *(guards[o] for o in node.output if o in guards)]
    del graph.node[:]
    graph.node.extend(ordered)
    return guarded


def _drop_guards(inferred: onnx.ModelProto) -> None:
    for values in (inferred.graph.input, inferred.graph.value_info):
        kept = [v for v in values if not v.name.startswith(GUARD_PREFIX)]
        del values[:]
        values.extend(kept)


def _fill_from(inferred: onnx.ModelProto, plain: onnx.ModelProto) -> None:
    """Takes ``plain``'s entry for every value that ``inferred`` knows less about."""
    known = {v.name: v for v in inferred.graph.value_info}
    for value in plain.graph.value_info:
        current = known.get(value.name)
        if current is None:
            inferred.graph.value_info.append(value)
        elif _known_dims(value) > _known_dims(current):
            current.CopyFrom(value)
    for theirs, mine in zip(plain.graph.output, inferred.graph.output, strict=True):
        if _known_dims(theirs) > _known_dims(mine):
            mine.CopyFrom(theirs)


def _known_dims(value: onnx.ValueInfoProto) -> int:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return -1
    return sum(d.HasField("dim_value") for d in tensor.shape.dim)
