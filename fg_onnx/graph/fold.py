"""Folding nodes whose inputs are all constants into initializers.

Exporters compute shapes from constants through ops shape inference does not follow (PyTorch's
MultiheadAttention reshapes with ``Mod`` of constants); folding them first lets inference
recover every rank, and turns weight-only subgraphs (transposed or dequantised weights) into
plain initializers that the rules and bias taps recognise.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from fg_onnx.graph.control import implicit_inputs
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, has_subgraph, node_attributes

# Never folded: nondeterministic, or producing outputs that are cheaper to keep as a node.
UNFOLDABLE = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Constant", "If", "Loop", "Scan", "SequenceConstruct", "Identity",
})
MAX_FOLDED_ELEMENTS = 1 << 20


def _foldable(node: onnx.NodeProto, constants: set[str]) -> bool:
    return (
        node.domain in DEFAULT_DOMAINS
        and node.op_type not in UNFOLDABLE
        and len(node.input) > 0
        and all(name == "" or name in constants for name in node.input)
        and not has_subgraph(node)
    )


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray],
              opset: list[onnx.OperatorSetIdProto]) -> list[np.ndarray] | None:
    inputs = [n for n in node.input if n]
    graph = onnx.helper.make_graph(
        [node], "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(
            values[n].dtype), values[n].shape) for n in dict.fromkeys(inputs)],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(opset))
    try:
        results = ReferenceEvaluator(model).run(None, {n: values[n] for n in inputs})
    except Exception:  # an op the reference evaluator lacks: leave the node as it is
        return None
    return [np.asarray(r) for r in results]


def fold_constants(model: onnx.ModelProto) -> int:
    """Replaces constant-only nodes of ``model`` (in place) by initializers; returns how many."""
    info = GraphInfo(model)
    constants = set(info.initializers) | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"
        and n.domain in DEFAULT_DOMAINS
    }
    # An initializer that an old export also lists as a graph input counts as a constant, as
    # everywhere in fg-onnx (README: its stored value is the one explained).
    values: dict[str, np.ndarray] = {}
    kept, folded = [], 0
    for node in model.graph.node:
        if not _foldable(node, constants):
            kept.append(node)
            continue
        for name in node.input:
            if name and name not in values:
                value = info.const(name)
                if value is None:
                    break
                values[name] = value
        results = _evaluate(node, values, list(model.opset_import))
        if results is None or any(r.size > MAX_FOLDED_ELEMENTS for r in results):
            kept.append(node)
            continue
        for name, result in zip(node.output, results, strict=False):
            if name:
                values[name] = result
                constants.add(name)
                model.graph.initializer.append(numpy_helper.from_array(result, name))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        _drop_stale_value_info(model)
        _drop_unused_initializers(model)
    return folded


def fold_static_shapes(model: onnx.ModelProto) -> int:
    """Replaces (in place) ``Shape`` nodes, and ``Gather``s of their output, whose result is
    known from the inferred shapes by initializers; returns how many.

    onnx's data propagation does not follow every exporter's shape arithmetic (TorchScript
    exports ShuffleNet's ``chunk`` as a Slice whose ends are Shape → Gather → Add → Div →
    Mul), so the slice's shape, and everything after it, would stay unknown. Only dims that
    are already fixed integers are folded; a symbolic batch stays symbolic.
    """
    info = GraphInfo(model)
    known: dict[str, np.ndarray] = {}
    kept = []
    for node in model.graph.node:
        value = _static_shape_value(node, info) if node.domain in DEFAULT_DOMAINS else None
        if value is None:
            kept.append(node)
            continue
        known[node.output[0]] = value
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    if known:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        _drop_stale_value_info(model)
    return len(known)


def _static_shape_value(node: onnx.NodeProto, info: GraphInfo) -> np.ndarray | None:
    if node.op_type == "Shape" and len(node.output) == 1:
        dims = _shape_dims(node, info)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return np.array(dims, dtype=np.int64)
    source = info.producer.get(node.input[0]) if node.op_type == "Gather" else None
    if source is None or source.op_type != "Shape" or node_attributes(node).get("axis", 0) != 0:
        return None
    dims, indices = _shape_dims(source, info), info.const(node.input[1])
    if dims is None or indices is None:
        return None
    if not all(-len(dims) <= int(i) < len(dims) for i in indices.ravel()):
        return None
    picked = [dims[int(i)] for i in indices.ravel()]
    if not all(isinstance(d, int) for d in picked):
        return None
    return np.array(picked, dtype=np.int64).reshape(indices.shape)


def _shape_dims(node: onnx.NodeProto, info: GraphInfo) -> tuple[int | str | None, ...] | None:
    """What a Shape node returns, as far as the inferred shapes tell."""
    shape = info.shape(node.input[0])
    if shape is None:
        return None
    attrs = node_attributes(node)
    return shape[attrs.get("start", 0):attrs.get("end", len(shape))]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    # An If or Loop branch may read an initializer that no top-level node reads.
    used.update(i for n in model.graph.node if has_subgraph(n) for i in implicit_inputs(n))
    used |= {v.name for v in model.graph.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


def _drop_stale_value_info(model: onnx.ModelProto) -> None:
    produced = {o for n in model.graph.node for o in n.output}
    kept = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
