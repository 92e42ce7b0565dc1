"""The reverse-mode walk: from seed cotangents back to the requested tensors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from fg_onnx.errors import UnsupportedOpsError
from fg_onnx.grad import rules as _rules  # noqa: F401  (registers every rule)
from fg_onnx.grad.registry import REGISTRY, Cotangents, RuleEntry, VJPContext
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.control import implicit_inputs
from fg_onnx.graph.info import FLOAT_TYPES, GraphInfo, has_subgraph, opset_of

MAYBE_FLOAT = FLOAT_TYPES | {0}

NodeHook = Callable[[VJPContext, Cotangents, Sequence[str | None]], None]
"""Called after each differentiated node with its context, output and input cotangents."""


@dataclass
class Backward:
    """What :func:`build_backward` produced."""

    grads: dict[str, str | None]
    """Cotangent tensor name for each requested tensor (None when the seed does not reach it)."""
    differentiated: Counter[str] = field(default_factory=Counter)
    """How many nodes of each op type were differentiated."""
    active_nodes: list[onnx.NodeProto] = field(default_factory=list)
    """Nodes on a path from a requested tensor to a seed, in topological order."""


def topological_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in an order where producers precede consumers."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a dangling input: keep the stored order for the rest
            ordered.extend(pending)
            break
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
    return ordered


def _read(node: onnx.NodeProto) -> list[str]:
    """What a node reads: its inputs and, for control flow, the outer tensors its subgraphs
    use (an If on the path reads the input only through them)."""
    if not has_subgraph(node):
        return list(node.input)
    return [*node.input, *implicit_inputs(node)]


def _descendants(nodes: Sequence[onnx.NodeProto], info: GraphInfo, roots: set[str]) -> set[str]:
    reached = set(roots)
    for node in nodes:
        if any(name in reached for name in _read(node) if name):
            # A tensor of unknown type may be float: keep walking, so that an op without a
            # rule is reported as such rather than as a missing path.
            reached.update(o for o in node.output if o and info.elem_type(o) in MAYBE_FLOAT)
    return reached


def _ancestors(nodes: Sequence[onnx.NodeProto], targets: set[str]) -> set[str]:
    needed = set(targets)
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            needed.update(i for i in _read(node) if i)
    return needed


def active_nodes(info: GraphInfo, seeds: set[str], wrt: set[str]) -> list[onnx.NodeProto]:
    """Nodes that lie on a path from ``wrt`` to ``seeds`` (the rest is pruned)."""
    return _active_path(info, seeds, wrt)[0]


def _active_path(info: GraphInfo, seeds: set[str], wrt: set[str]
                 ) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes on a path from ``wrt`` to ``seeds``, and every tensor downstream of ``wrt``."""
    nodes = topological_nodes(info.graph)
    forward = _descendants(nodes, info, wrt)
    backward = _ancestors(nodes, seeds)
    on_path = forward & backward
    path = [
        n for n in nodes
        if any(o in on_path for o in n.output) and any(i in forward for i in _read(n) if i)
    ]
    return path, forward


def _rule_for(info: GraphInfo, node: onnx.NodeProto) -> RuleEntry | None:
    return REGISTRY.lookup(node.op_type, node.domain, info.opset)


def check_coverage(info: GraphInfo, nodes: Sequence[onnx.NodeProto]) -> None:
    """Raises one error listing every op on the path that has no rule."""
    missing = [
        (node.domain, node.op_type, node.name, opset_of(info.model, node.domain))
        for node in nodes if _rule_for(info, node) is None
    ]
    if missing:
        raise UnsupportedOpsError(missing)


def build_backward(
    info: GraphInfo,
    builder: GraphBuilder,
    seeds: Mapping[str, str],
    wrt: Sequence[str],
    on_node: NodeHook | None = None,
    provider: str = "any",
) -> Backward:
    """Builds the gradient subgraph.

    Args:
        info: facts about the (normalised) forward graph.
        builder: where the new nodes go.
        seeds: forward tensor name -> name of its cotangent (for example a one-hot row).
        wrt: tensors whose cotangents are wanted (graph inputs or intermediate tensors).
        on_node: optional hook seeing every differentiated node (bias taps use it).
        provider: "any" or "cpu", where the graph will run (see VJPContext.provider).

    Returns:
        The cotangent names of ``wrt`` and what was differentiated. No gradient w.r.t. weights
        is built: only tensors that depend on ``wrt`` carry cotangents.
    """
    wrt_set = {name for name in wrt if info.is_float(name)}
    nodes, forward = _active_path(info, set(seeds), wrt_set)
    check_coverage(info, nodes)
    pending: dict[str, list[str]] = {name: [cot] for name, cot in seeds.items()}
    result = Backward(grads={}, active_nodes=nodes)
    for node in reversed(nodes):
        gy = [_total(builder, pending.pop(o, None)) if o else None for o in node.output]
        for name, total in zip(node.output, gy, strict=True):
            if name in wrt_set:
                result.grads[name] = total
        if all(g is None for g in gy):
            continue
        entry = _rule_for(info, node)
        if entry is None:
            continue
        needs = tuple(bool(i) and i in forward and info.is_float(i) for i in node.input)
        context = VJPContext(node=node, info=info, b=builder, needs=needs,
                             wanted=frozenset(wrt_set), provider=provider)
        if entry.rule is None:
            # Piecewise constant (Floor, Sign, ...): no gradient passes, but its output is
            # still a function of the input that the hook may have to account for.
            if on_node is not None:
                on_node(context, gy, [None] * len(node.input))
            continue
        grads = _checked(context, entry.rule(context, gy))
        result.differentiated[node.op_type] += 1
        if on_node is not None:
            on_node(context, gy, grads)
        for name, need, grad in zip(node.input, needs, grads, strict=True):
            if need and grad is not None:
                pending.setdefault(name, []).append(grad)
    for name in wrt:
        if name not in result.grads:
            result.grads[name] = _total(builder, pending.get(name))
    return result


def _checked(context: VJPContext, grads: Sequence[str | None]) -> list[str | None]:
    """The rule's cotangents, one per node input: entries past the node's last input stand
    for optional inputs the node omits and must be None (see the registry's contract)."""
    count = len(context.node.input)
    if len(grads) < count:
        raise context.error(f"its VJP rule returned {len(grads)} cotangent(s) for {count} "
                            "input(s)")
    extra = [i for i in range(count, len(grads)) if grads[i] is not None]
    if extra:
        raise context.error(f"its VJP rule returned a cotangent for input {extra[0]}, which "
                            f"the node does not have ({count} input(s))")
    return list(grads[:count])


def _total(builder: GraphBuilder, parts: list[str] | None) -> str | None:
    if not parts:
        return None
    return builder.add_all(parts)
