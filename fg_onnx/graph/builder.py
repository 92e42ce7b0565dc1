"""Appending new nodes and constants to a graph with unique names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.info import GraphInfo

AttrValue = Any


class GraphBuilder:
    """Collects the nodes and initializers a pass adds, then merges them into a model.

    Ops are created by calling the op type as a method: ``b.Mul(x, y)`` returns the output
    name, ``b.op("Split", x, s, outputs=2, axis=1)`` returns a list of names.
    """

    def __init__(self, info: GraphInfo, prefix: str = "fg") -> None:
        """Starts an empty batch of additions to the graph that ``info`` describes."""
        self.info = info
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set(info.producer) | set(info.initializers)
        self._taken |= {v.name for v in info.graph.input} | {n.name for n in info.graph.node}
        self._counter = 0
        self._const_cache: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def fresh(self, hint: str) -> str:
        """Returns a name that no tensor or node of the graph uses yet."""
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def reserve(self, name: str) -> str:
        """Claims an exact name (for public outputs); fails if the graph already uses it."""
        if name in self._taken:
            raise UnsupportedModelError(f"the model already has a tensor named {name!r}, which "
                                        "fg-onnx needs for a new input or output")
        self._taken.add(name)
        return name

    def op_multi(
        self,
        op_type: str,
        *inputs: str | None,
        outputs: int | Sequence[str] = 1,
        domain: str = "",
        **attrs: AttrValue,
    ) -> list[str]:
        """Adds one node and returns its output names (fresh ones unless given)."""
        if isinstance(outputs, int):
            out_names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            out_names = list(outputs)
        clean_attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(
            op_type,
            ["" if name is None else name for name in inputs],
            out_names,
            name=self.fresh(op_type),
            domain=domain,
            **clean_attrs,
        )
        self.nodes.append(node)
        return out_names

    def op(self, op_type: str, *inputs: str | None, **attrs: AttrValue) -> str:
        """Adds a single-output node and returns the output name."""
        return self.op_multi(op_type, *inputs, outputs=1, **attrs)[0]

    def __getattr__(self, op_type: str) -> Callable[..., str]:
        if not op_type[:1].isupper():
            raise AttributeError(op_type)
        return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)

    def const(self, value: np.ndarray | float | int | Sequence[Any], dtype: Any = None,
              hint: str = "const") -> str:
        """Adds (or reuses) an initializer holding ``value``."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._const_cache:
            return self._const_cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def ints(self, values: Iterable[int] | int) -> str:
        """A 1-D int64 constant (axes, shapes, pads)."""
        flat = [values] if isinstance(values, int) else list(values)
        return self.const(np.array(flat, dtype=np.int64), hint="ints")

    def scalar(self, value: float, elem_type: int) -> str:
        """A 0-D constant of the given ONNX element type."""
        np_type = helper.tensor_dtype_to_np_dtype(elem_type)
        return self.const(np.array(value, dtype=np_type), hint="scalar")

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """A Reduce* node in the form the model's opset expects (axes input or attribute)."""
        axes_as_input = self.info.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op_type, x, self.ints(axes), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def add_all(self, parts: Sequence[str]) -> str:
        """Σ ``parts`` as a balanced tree of Adds: onnxruntime's CPU Sum kernel is slower than
        Add on large tensors (measured 1.5x for two inputs, 1.9x for three)."""
        level = list(parts)
        if not level:
            raise ValueError("add_all needs at least one tensor")
        while len(level) > 1:
            paired = [self.Add(a, c) for a, c in zip(level[::2], level[1::2], strict=False)]
            level = paired + level[len(paired) * 2:]
        return level[0]

    def apply_to(self, model: onnx.ModelProto) -> None:
        """Appends what ``model``'s outputs need of everything collected (in place).

        Nodes whose results nothing uses are dropped: onnxruntime runs every node of a graph,
        whatever the fetched outputs, so a dead node costs time at each call.
        """
        needed = {v.name for v in model.graph.output}
        needed.update(name for node in model.graph.node for name in reads(node))
        live: list[onnx.NodeProto] = []
        for node in reversed(self.nodes):  # consumers were added after their producers
            if any(name in needed for name in node.output):
                live.append(node)
                needed.update(reads(node))
        model.graph.node.extend(reversed(live))
        model.graph.initializer.extend(t for t in self.initializers if t.name in needed)
        self.nodes = []
        self.initializers = []
        self._const_cache = {}


def reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs and what its subgraphs (a Scan's body) take from
    the enclosing graph by name."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            names |= _outer_reads(graph)
    return names


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= reads(node)
        local.update(node.output)
    used.update(v.name for v in graph.output)
    return used - local
