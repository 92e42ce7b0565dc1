"""Running a model in float16 while its interface stays float32.

Which float32 tensors become float16 is decided by type unification over the op schemas:
the tensors one node binds to the same type variable must share a type, so they form
classes (union-find). A class runs in float16 when an op ties it to a float16-capable type
variable shared by several slots, and it carries data (it depends on a graph input through
something other than Shape/Size) or parameters. Shape arithmetic in float (Cast(Shape) ·
scale) stays float32: float16 is exact only up to 2048 and overflows at 65504. Values that
carry no data are typed per use (a weight both sides read is duplicated, a computed one
cast). Slots that accept no float16 (Resize's scales, Range) keep float32, with a Cast
where float16 data flows in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo, has_subgraph, opset_of
from fg_onnx.graph.normalize import infer_shapes

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
HALF_TYPE = "tensor(float16)"
HALF_MAX = float(np.finfo(np.float16).max)
SHAPE_OPS = frozenset({"Shape", "Size"})
CASTS = frozenset({"Cast", "CastLike"})
CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})
"""Their outputs take the type their consumers want (set in their value attribute)."""
# Float16 kernels onnxruntime lacks although the schema allows them (its CPU provider rejects
# a float16 scatter-add at run time and has no float16 random or window ops), and ops whose
# output type an attribute sets: these nodes compute in float32 between Casts.
_ALWAYS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Bernoulli", "Multinomial", "EyeLike", "HannWindow", "HammingWindow",
                     "BlackmanWindow", "MelWeightMatrix"})
FLOAT32_ONLY: dict[str, Callable[[onnx.NodeProto], bool]] = {
    "ScatterElements": lambda node: _reduction(node) != "none",
    "ScatterND": lambda node: _reduction(node) != "none",
    **{op: lambda node: True for op in _ALWAYS},
}


def to_float16(model: onnx.ModelProto, float32: Collection[str] = ()) -> onnx.ModelProto:
    """Converts ``model`` in place (see the module docstring) and returns it.

    Args:
        model: a float32 model.
        float32: tensors whose classes stay float32 whatever they carry; data enters them
            through explicit Casts (for sums that would overflow float16).

    Raises:
        UnsupportedModelError: a weight overflows float16, or the graph has subgraphs.
    """
    _refuse_subgraphs(model)
    infer_shapes(model)
    info = GraphInfo(model)
    _Rewriter(model, info, _plan(info, set(float32))).run()
    return model


def _refuse_subgraphs(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if has_subgraph(node):
            raise UnsupportedModelError(
                f"float16: models with control flow are not supported ({node.op_type} at node "
                f"{node.name or '<unnamed>'}); use float32")
    if model.graph.sparse_initializer:
        raise UnsupportedModelError("float16: models with sparse initializers are not "
                                    "supported; use float32")


@dataclass(frozen=True)
class _Slot:
    """One float32 input or output of a node."""

    node: int
    is_output: bool
    index: int
    tensor: str


@dataclass
class _Plan:
    half: set[str] = field(default_factory=set)
    """Computed float32 tensors that become float16."""
    fixed: list[_Slot] = field(default_factory=list)
    """Slots that accept no float16, whatever their tensor becomes."""
    half_uses: dict[str, list[_Slot]] = field(default_factory=dict)
    """Per initializer, the slots that take it as float16."""
    float_uses: set[str] = field(default_factory=set)
    """Initializers that some slot (or the graph's outputs) takes as float32."""
    recast: list[tuple[_Slot, int]] = field(default_factory=list)
    """Input slots that take a computed constant or shape value in the other type."""


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        root = self.parent.setdefault(key, key)
        while root != self.parent[root]:
            root = self.parent[root]
        while key != root:  # path compression
            key, self.parent[key] = self.parent[key], root
        return root

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _plan(info: GraphInfo, float32: set[str]) -> _Plan:
    """Each use of a tensor that does not carry data (a weight, a value computed from weights
    or from shapes) is a class member of its own, so that a float16 and a float32 computation
    sharing it do not tie their types: an initializer is duplicated, a computed one cast.

    Only classes that some op binds to several slots of a float16-capable type variable
    become float16: a value that only reaches a Cast, a Shape or a float32-only slot keeps
    its precision."""
    data, shaped = _dependencies(info)
    classes, plan = _UnionFind(), _Plan()
    uses: list[tuple[str, _Slot]] = []
    capable: set[str] = set()  # type variables that tie two or more slots and take float16
    for index, node in enumerate(info.graph.node):
        slots = list(_float_slots(info, index, node))
        tied = Counter(variable for _, variable in slots if variable is not None)
        for slot, variable in slots:
            per_use = not slot.is_output and slot.tensor not in data
            member = f"{slot.tensor}\0{index}:{slot.index}" if per_use else slot.tensor
            classes.find(slot.tensor)
            if variable is None:
                plan.fixed.append(slot)
                if slot.tensor in info.initializers:
                    plan.float_uses.add(slot.tensor)
                continue
            classes.union(member, variable)
            if tied[variable] > 1:
                capable.add(variable)
            if per_use:
                uses.append((member, slot))
    for name in [*info.graph_inputs, *info.graph_outputs]:
        if info.elem_type(name) == FLOAT:
            classes.find(name)
    plan.float_uses |= set(info.graph_outputs) & set(info.initializers)

    def roots(names: Collection[str]) -> set[str]:
        return {classes.find(t) for t in names if t in classes.parent}

    typed = roots(capable)
    half_roots = ((roots(data) | (typed - roots(shaped))) & typed) - roots(float32)
    plan.half = {t for t in classes.parent if classes.find(t) in half_roots
                 and t not in info.initializers and "\0" not in t
                 and info.elem_type(t) == FLOAT}
    _place_constants(info, plan, [(slot, classes.find(m) in half_roots) for m, slot in uses])
    return plan


def _place_constants(info: GraphInfo, plan: _Plan, uses: list[tuple[_Slot, bool]]) -> None:
    """Types of the values that carry no data, from what their uses want: an initializer
    or a Constant(OfShape) is float16 when every use wants float16, else float32 with a
    float16 copy (initializer) or Casts (the rest)."""
    wants: dict[str, list[bool]] = {}
    for slot, wants_half in uses:
        wants.setdefault(slot.tensor, []).append(wants_half)
    outputs = set(info.graph_outputs)
    for name, wanted in wants.items():
        producer = info.producer.get(name)
        if producer is not None and producer.op_type in CONSTANT_OPS and name not in outputs:
            plan.half.discard(name)
            if all(wanted):
                plan.half.add(name)
    for slot, wants_half in uses:
        if slot.tensor in info.initializers:
            if wants_half:
                plan.half_uses.setdefault(slot.tensor, []).append(slot)
            else:
                plan.float_uses.add(slot.tensor)
        elif wants_half != (slot.tensor in plan.half):
            plan.recast.append((slot, HALF if wants_half else FLOAT))


def _dependencies(info: GraphInfo) -> tuple[set[str], set[str]]:
    """Tensors that depend on the graph inputs' values, and shape arithmetic: values computed
    from shapes (and constants) only. A float output takes its values from its float inputs
    (Expand, Reshape, Slice only read shapes from their integer ones), or from a Cast's."""
    data, shaped = set(info.graph_inputs), set()
    for node in info.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in SHAPE_OPS:
            shaped.update(node.output)
        elif any(name in data for name in inputs):
            data.update(node.output)
        elif node.op_type != "ConstantOfShape":  # a fill value, only shaped by shapes
            for name in node.output:
                values = inputs if node.op_type in CASTS or not info.is_float(name) else [
                    i for i in inputs if info.is_float(i)]
                if any(i in shaped for i in values):
                    shaped.add(name)
    return data, shaped


def _float_slots(info: GraphInfo, index: int,
                 node: onnx.NodeProto) -> Iterator[tuple[_Slot, str | None]]:
    """The node's float32 slots, each with the key of its float16-capable type variable
    (None: the slot takes no float16)."""
    keeps_float32 = FLOAT32_ONLY.get(node.op_type)
    schema = None if keeps_float32 and keeps_float32(node) else _schema(info.model, node)
    for name in node.output:
        if name and not info.elem_type(name) and info.consumers.get(name):
            raise UnsupportedModelError(
                f"float16: the element type of {name!r} ({node.op_type} at node "
                f"{node.name or '<unnamed>'}) is unknown; use float32")
    for is_output, names in ((False, node.input), (True, node.output)):
        formals: Sequence[onnx.defs.OpSchema.FormalParameter]
        formals = [] if schema is None else (schema.outputs if is_output else schema.inputs)
        for i, name in enumerate(names):
            if not name or info.elem_type(name) != FLOAT:
                continue
            slot = _Slot(index, is_output, i, name)
            variable = _half_variable(schema, formals, i)
            yield slot, None if variable is None else f"\0{index}:{variable}"


def _schema(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(node.op_type, opset_of(model, node.domain), node.domain)
    except onnx.defs.SchemaError:
        return None  # an op onnx does not know (a runtime's contrib op): float32 around it


def _reduction(node: onnx.NodeProto) -> str:
    for attribute in node.attribute:
        if attribute.name == "reduction":
            return str(attribute.s.decode())
    return "none"


def _half_variable(schema: onnx.defs.OpSchema | None,
                   formals: Sequence[onnx.defs.OpSchema.FormalParameter], i: int) -> str | None:
    if schema is None or not formals:
        return None
    type_str = formals[min(i, len(formals) - 1)].type_str  # the last one may be variadic
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return type_str if HALF_TYPE in allowed.get(type_str, ()) else None


class _Rewriter:
    """Applies a plan: converted constants and attributes, Casts at the fixed slots and at
    the graph's float32 inputs and outputs."""

    def __init__(self, model: onnx.ModelProto, info: GraphInfo, plan: _Plan) -> None:
        self.graph, self.plan = model.graph, plan
        self.initializers = set(info.initializers)
        self.fresh = GraphBuilder(info, prefix="fg_fp16").fresh  # only its unique names

    def run(self) -> None:
        half = self.plan.half
        converted = self._initializers()
        for node in self.graph.node:
            if any(name in half for name in node.output):
                _convert_attributes(node)
        # exporters (torch.onnx's dynamo) record types for initializers too; before IR 4
        # initializers were graph inputs as well
        for value in self.graph.value_info:
            if value.name in half or value.name in converted:
                value.type.tensor_type.elem_type = HALF
        for value in self.graph.input:
            if value.name in converted:
                value.type.tensor_type.elem_type = HALF
        self._slot_casts()
        self._inputs()
        self._outputs()

    def _initializers(self) -> set[str]:
        """float16 in place when every use wants float16, else a float16 copy beside it;
        returns the names converted in place."""
        copies, converted = [], set()
        for tensor in self.graph.initializer:
            slots = self.plan.half_uses.get(tensor.name)
            if not slots:
                continue
            if tensor.name not in self.plan.float_uses:
                tensor.CopyFrom(_half_tensor(tensor, tensor.name))
                converted.add(tensor.name)
                continue
            copy = self.fresh(f"{tensor.name}/float16")
            copies.append(_half_tensor(tensor, copy))
            for slot in slots:
                self.graph.node[slot.node].input[slot.index] = copy
        self.graph.initializer.extend(copies)
        return converted

    def _cast(self, source: str, target: str, to: int) -> onnx.NodeProto:
        return helper.make_node("Cast", [source], [target], name=self.fresh("Cast"),
                                to=to)

    def _slot_casts(self) -> None:
        """Casts where a slot wants another type than its tensor has: the fixed slots
        (float32) and the recast uses of computed constants."""
        before: dict[int, list[onnx.NodeProto]] = {}
        after: dict[int, list[onnx.NodeProto]] = {}
        cast: dict[tuple[str, int], str] = {}
        wanted = [(slot, FLOAT) for slot in self.plan.fixed if slot.tensor in self.plan.half]
        for slot, to in sorted([*wanted, *self.plan.recast], key=lambda item: item[0].node):
            node = self.graph.node[slot.node]
            if slot.is_output:
                wide = self.fresh(f"{slot.tensor}/float32")
                node.output[slot.index] = wide
                after.setdefault(slot.node, []).append(self._cast(wide, slot.tensor, HALF))
                continue
            key = (slot.tensor, to)
            if key not in cast:
                cast[key] = self.fresh(f"{slot.tensor}/{'float16' if to == HALF else 'float32'}")
                before.setdefault(slot.node, []).append(self._cast(slot.tensor, cast[key], to))
            node.input[slot.index] = cast[key]
        nodes = []
        for i, node in enumerate(self.graph.node):
            nodes.extend([*before.get(i, []), node, *after.get(i, [])])
        _replace_nodes(self.graph, nodes)

    def _inputs(self) -> None:
        """float32 graph inputs are cast to float16 once, first thing."""
        casts, renamed = [], {}
        for value in self.graph.input:
            if value.name in self.plan.half and value.name not in self.initializers:
                renamed[value.name] = self.fresh(f"{value.name}/float16")
                casts.append(self._cast(value.name, renamed[value.name], HALF))
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
        _replace_nodes(self.graph, [*casts, *self.graph.node])

    def _outputs(self) -> None:
        """float16 results are cast back to float32 under their own names."""
        inputs = {v.name for v in self.graph.input}
        for value in self.graph.output:
            if value.name not in self.plan.half or value.name in inputs:
                continue
            inner = self.fresh(f"{value.name}/float16")
            _rename(self.graph, value.name, inner)
            self.graph.node.append(self._cast(inner, value.name, FLOAT))


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for holder in [*graph.initializer, *graph.value_info]:
        if holder.name == old:
            holder.name = new


def _half_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    value = numpy_helper.to_array(tensor)
    finite = value[np.isfinite(value)]
    if finite.size and float(np.abs(finite).max()) > HALF_MAX:
        raise UnsupportedModelError(
            f"float16: {name!r} holds values up to {float(np.abs(finite).max()):.3g}, beyond "
            f"float16's range (±{HALF_MAX:.0f}); use float32")
    return numpy_helper.from_array(value.astype(np.float16), name)


def _convert_attributes(node: onnx.NodeProto) -> None:
    """The attributes that make a Constant, ConstantOfShape or Cast output float32."""
    if node.op_type == "Cast":
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = HALF
        return
    if node.op_type not in CONSTANT_OPS:
        return
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FLOAT:
            attribute.t.CopyFrom(_half_tensor(attribute.t, attribute.t.name or node.output[0]))
        elif attribute.name in ("value_float", "value_floats"):
            value = np.asarray(helper.get_attribute_value(attribute), np.float32)
            node.attribute.remove(attribute)
            node.attribute.append(helper.make_attribute(
                "value", _half_tensor(numpy_helper.from_array(value), node.output[0])))
            return
    if node.op_type == "ConstantOfShape" and not node.attribute:
        node.attribute.append(helper.make_attribute(
            "value", numpy_helper.from_array(np.zeros(1, np.float16))))
