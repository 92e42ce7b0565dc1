"""Static control flow made straight-line: If nodes whose condition is a constant are replaced
by the branch they take, and Loops with a constant trip count and no data-dependent exit are
unrolled.

TorchScript (``torch.jit.script``) and tf2onnx export Python conditionals and loops as If and
Loop even when the condition or count is fixed for the exported shapes; constant and shape
folding then decide them. What stays (a data-dependent condition, a long loop) is left as it
is: off the gradient path it costs nothing, on it the walk refuses it in one line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo

MAX_UNROLLED_ITERATIONS = 64
"""Longer loops are left as Loop nodes: unrolled, every iteration is a copy of the body."""

Fresh = Callable[[str], str]


def outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used but not defined inside it."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    used: set[str] = set()
    for node in graph.node:
        used.update(name for name in node.input if name not in defined)
        for attribute in node.attribute:
            for sub in _subgraphs(attribute):
                used.update(outer_names(sub) - defined)
        defined.update(node.output)
    used.update(v.name for v in graph.output if v.name not in defined)
    return used


def implicit_inputs(node: onnx.NodeProto) -> list[str]:
    """The outer tensors that a control-flow node's subgraphs read (empty for other nodes)."""
    names: set[str] = set()
    for attribute in node.attribute:
        for sub in _subgraphs(attribute):
            names |= outer_names(sub)
    return sorted(names)


def _subgraphs(attribute: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attribute.type == onnx.AttributeProto.GRAPH:
        return [attribute.g]
    if attribute.type == onnx.AttributeProto.GRAPHS:
        return list(attribute.graphs)
    return []


def _renamed_graph(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Renames, in place, the outer names a nested subgraph reads."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        for attribute in node.attribute:
            for sub in _subgraphs(attribute):
                _renamed_graph(sub, names)
    for value in graph.output:
        value.name = names.get(value.name, value.name)


def _inline(body: onnx.GraphProto, bound: dict[str, str], fresh: Fresh,
            model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], list[str]]:
    """Copies of ``body``'s nodes with its inputs bound to outer tensors (``bound``) and every
    name it defines made unique; its initializers go to ``model``. Returns the nodes and the
    outer names of the body's outputs."""
    names = dict(bound)
    for tensor in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = names[tensor.name] = fresh(tensor.name)
        model.graph.initializer.append(copy)
    nodes = []
    for node in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [names.get(n, n) for n in node.input]
        for i, output in enumerate(node.output):
            if output:
                copy.output[i] = names[output] = fresh(output)
        copy.name = fresh(node.name or node.op_type)
        for attribute in copy.attribute:
            for sub in _subgraphs(attribute):
                _renamed_graph(sub, names)
        nodes.append(copy)
    return nodes, [names.get(v.name, v.name) for v in body.output]


def _identities(sources: list[str], targets: list[str]) -> list[onnx.NodeProto]:
    return [helper.make_node("Identity", [s], [t], name=f"{t}/inlined")
            for s, t in zip(sources, targets, strict=False) if t]


def _attribute_graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    graph: onnx.GraphProto = next(a.g for a in node.attribute if a.name == name)
    return graph


def _taken_branch(node: onnx.NodeProto, info: GraphInfo, fresh: Fresh
                  ) -> list[onnx.NodeProto] | None:
    condition = info.const(node.input[0])
    if condition is None or condition.size != 1:
        return None
    branch = _attribute_graph(node, "then_branch" if bool(condition.reshape(-1)[0])
                              else "else_branch")
    nodes, outputs = _inline(branch, {}, fresh, info.model)
    return nodes + _identities(outputs, list(node.output))


def _always_true(body: onnx.GraphProto, condition_out: str) -> bool:
    """Whether the body's continue-condition is its incoming one or a constant true."""
    if len(body.input) > 1 and condition_out == body.input[1].name:
        return True
    constant = next((t for t in body.initializer if t.name == condition_out), None)
    for node in body.node:
        if condition_out in node.output and node.op_type == "Constant":
            constant = next((a.t for a in node.attribute if a.name == "value"), None)
        elif (condition_out in node.output and node.op_type == "Identity"
              and len(body.input) > 1 and node.input[0] == body.input[1].name):
            return True
    return constant is not None and bool(numpy_helper.to_array(constant).all())


def _unrolled_loop(node: onnx.NodeProto, info: GraphInfo, fresh: Fresh
                   ) -> list[onnx.NodeProto] | None:
    inputs = [*node.input, "", ""]
    trips = info.const(inputs[0]) if inputs[0] else None
    condition = info.const(inputs[1]) if inputs[1] else np.array(True)
    body = _attribute_graph(node, "body")
    if (trips is None or condition is None or not bool(condition.all())
            or not 0 < int(trips.reshape(-1)[0]) <= MAX_UNROLLED_ITERATIONS
            or not _always_true(body, body.output[0].name)):
        return None
    carried = list(node.input[2:])
    scanned: list[list[str]] = [[] for _ in body.output[1 + len(carried):]]
    nodes: list[onnx.NodeProto] = []
    for step in range(int(trips.reshape(-1)[0])):
        counter = fresh("iteration")
        nodes.append(helper.make_node("Constant", [], [counter], name=fresh("Constant"),
                                      value=numpy_helper.from_array(np.array(step, np.int64))))
        truth = fresh("condition")
        nodes.append(helper.make_node("Constant", [], [truth], name=fresh("Constant"),
                                      value=numpy_helper.from_array(np.array(True))))
        bound = dict(zip([v.name for v in body.input], [counter, truth, *carried],
                         strict=True))
        body_nodes, outputs = _inline(body, bound, fresh, info.model)
        nodes += body_nodes
        carried = outputs[1:1 + len(carried)]
        for values, name in zip(scanned, outputs[1 + len(carried):], strict=True):
            values.append(name)
    nodes += _identities(carried, list(node.output[:len(carried)]))
    return nodes + _stacked(scanned, list(node.output[len(carried):]), fresh)


def _stacked(scanned: list[list[str]], targets: list[str], fresh: Fresh
             ) -> list[onnx.NodeProto]:
    """The Loop's scan outputs: each iteration's value along a new first axis."""
    if not scanned:
        return []
    axis = fresh("axis")
    nodes = [helper.make_node("Constant", [], [axis], name=fresh("Constant"),
                              value=numpy_helper.from_array(np.array([0], np.int64)))]
    for values, target in zip(scanned, targets, strict=False):
        stacked = [fresh("stacked") for _ in values]
        nodes += [helper.make_node("Unsqueeze", [value, axis], [name], name=fresh("Unsqueeze"))
                  for value, name in zip(values, stacked, strict=True)]
        nodes.append(helper.make_node("Concat", stacked, [target], name=fresh("Concat"),
                                      axis=0))
    return nodes


def inline_static_control_flow(model: onnx.ModelProto) -> int:
    """Replaces, in place, top-level Ifs with a constant condition by the taken branch and
    unrolls Loops of at most MAX_UNROLLED_ITERATIONS constant trips whose body never exits
    early; returns how many nodes were replaced."""
    info = GraphInfo(model)
    taken = {n for node in model.graph.node for n in node.output} | set(info.initializers)
    counter = iter(range(1, 1 << 62))

    def fresh(hint: str) -> str:
        while True:
            name = f"fg_inlined/{hint}_{next(counter)}"
            if name not in taken:
                taken.add(name)
                return name

    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in model.graph.node:
        expansion = None
        if node.domain in DEFAULT_DOMAINS and node.op_type == "If":
            expansion = _taken_branch(node, info, fresh)
        elif node.domain in DEFAULT_DOMAINS and node.op_type == "Loop":
            expansion = _unrolled_loop(node, info, fresh)
        if expansion is None:
            nodes.append(node)
            continue
        nodes += expansion
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return replaced
