"""Read-only facts about a graph: shapes, element types, constants, producers and consumers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

Dim = int | str | None
Shape = tuple[Dim, ...]

DEFAULT_DOMAINS = ("", "ai.onnx")


def opset_of(model: onnx.ModelProto, domain: str = "") -> int:
    """Returns the model's opset version for a domain ("" and "ai.onnx" are the same)."""
    wanted = DEFAULT_DOMAINS if domain in DEFAULT_DOMAINS else (domain,)
    for entry in model.opset_import:
        if entry.domain in wanted:
            return int(entry.version)
    return 0


def node_label(node: onnx.NodeProto) -> str:
    """How messages name a node: its op type and its name (``<unnamed>`` when it has none)."""
    return f"{node.op_type} node {node.name or '<unnamed>'!r}"


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes by name, as Python values (strings, and lists of strings,
    decoded to str: what ``onnx.helper.make_node`` takes back)."""
    return {a.name: _decoded(onnx.helper.get_attribute_value(a)) for a in node.attribute}


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def has_subgraph(node: onnx.NodeProto) -> bool:
    """Whether the node carries a graph attribute (If, Loop, Scan): control flow."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute)


def _shape_of(type_proto: onnx.TypeProto) -> Shape | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in type_proto.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


class GraphInfo:
    """Indexes a (shape-inferred) model so rules can ask about any tensor by name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        """Indexes ``model``; it must not change while this object is in use."""
        self.model = model
        self.graph = model.graph
        self.opset = opset_of(model)
        self._types: dict[str, onnx.TypeProto] = {}
        for value in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            self._types[value.name] = value.type
        self.initializers: dict[str, TensorProto] = {t.name: t for t in self.graph.initializer}
        self._constant_nodes: dict[str, onnx.NodeProto] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                self._constant_nodes[node.output[0]] = node
        self._const_cache: dict[str, np.ndarray] = {}

    @cached_property
    def graph_inputs(self) -> list[str]:
        """Names of real graph inputs (initializers listed as inputs excluded)."""
        return [v.name for v in self.graph.input if v.name not in self.initializers]

    @cached_property
    def graph_outputs(self) -> list[str]:
        """Names of graph outputs."""
        return [v.name for v in self.graph.output]

    def add_type(self, name: str, elem_type: int, shape: Sequence[Dim] | None) -> None:
        """Records the type of a tensor created after indexing (for example by a rule)."""
        type_proto = onnx.helper.make_tensor_type_proto(
            elem_type, None if shape is None else list(shape)
        )
        self._types[name] = type_proto

    def elem_type(self, name: str) -> int:
        """TensorProto element type of a tensor, 0 when unknown."""
        if name in self.initializers:
            return int(self.initializers[name].data_type)
        if name in self._constant_nodes:
            value = self.const(name)
            return 0 if value is None else _np_to_onnx(value.dtype)
        type_proto = self._types.get(name)
        if type_proto is not None and type_proto.HasField("tensor_type"):
            known = int(type_proto.tensor_type.elem_type)
            if known:
                return known
        return self._type_from_producer(name)

    def _type_from_producer(self, name: str) -> int:
        """Fallback where shape inference left a type out (it does for some ops, e.g.
        GroupNormalization in onnx 1.23): most ops give their first output the type of their
        first input."""
        node = self.producer.get(name)
        if node is None or node.output[0] != name or node.op_type in TYPE_CHANGING_OPS:
            return 0
        return self.elem_type(node.input[0]) if node.input and node.input[0] else 0

    def is_float(self, name: str) -> bool:
        """Whether the tensor has a floating-point element type (differentiable)."""
        return self.elem_type(name) in FLOAT_TYPES

    def shape(self, name: str) -> Shape | None:
        """Shape with ints for known dims, strings for symbolic ones, None for unknown ones."""
        if name in self.initializers:
            return tuple(int(d) for d in self.initializers[name].dims)
        if name in self._constant_nodes:
            value = self.const(name)
            return None if value is None else tuple(int(d) for d in value.shape)
        type_proto = self._types.get(name)
        return None if type_proto is None else _shape_of(type_proto)

    def rank(self, name: str) -> int | None:
        """Rank of the tensor, None when unknown."""
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape when every dim is a known integer, else None."""
        shape = self.shape(name)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]

    def is_const(self, name: str) -> bool:
        """Whether the tensor is an initializer or a Constant node's output."""
        return name in self.initializers or name in self._constant_nodes

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or Constant node output, None for computed tensors."""
        if name in self._const_cache:
            return self._const_cache[name]
        value: np.ndarray | None = None
        if name in self.initializers:
            value = numpy_helper.to_array(self.initializers[name])
        elif name in self._constant_nodes:
            value = _constant_value(self._constant_nodes[name])
        if value is not None and value.nbytes <= CACHED_CONSTANT_BYTES:
            self._const_cache[name] = value  # weights are read once; caching them doubles memory
        return value


CACHED_CONSTANT_BYTES = 1 << 16

TYPE_CHANGING_OPS = frozenset({
    "Cast", "CastLike", "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
    "ConstantOfShape", "Range", "OneHot", "EyeLike", "QuantizeLinear", "DequantizeLinear",
    "DynamicQuantizeLinear", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "StringNormalizer", "TfIdfVectorizer", "Einsum",
})

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)


def _np_to_onnx(dtype: np.dtype) -> int:
    return int(onnx.helper.np_dtype_to_tensor_dtype(dtype))


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None
