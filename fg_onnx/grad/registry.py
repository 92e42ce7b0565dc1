"""The table of vector-Jacobian product (VJP) rules, keyed by op type, domain and opset range.

A rule receives a :class:`VJPContext` (the node, its tensors' facts and a graph builder) and the
cotangents of the node's outputs (``None`` where an output does not reach the seed), and returns
one cotangent name per node input (``None`` where none is needed or none exists). The list may
go on past the node's last input, one ``None`` per optional input the node omits (so a rule may
return ``[dx, dlo, dhi]`` for a Clip without bounds); a shorter list, or a cotangent for an input
the node lacks, is an error naming the node (the walk checks it). Rules emit standard ai.onnx ops
only, so the result runs on any ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from fg_onnx.errors import GraphBuildError
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, Shape, node_attributes, node_label

Cotangents = list[str | None]
Rule = Callable[["VJPContext", Cotangents], Sequence[str | None]]


@dataclass
class VJPContext:
    """Everything a rule may ask about the node it differentiates."""

    node: onnx.NodeProto
    info: GraphInfo
    b: GraphBuilder
    needs: tuple[bool, ...]
    wanted: frozenset[str] = frozenset()
    """Tensors whose full cotangent the caller reads: a rule must not route another node's
    share of it elsewhere (see the Mul rule's x·σ(x) case)."""
    provider: str = "any"
    """Where the gradient graph will run: "any" (only ops every onnxruntime provider has
    kernels for) or "cpu" (rules may pick ops that only the CPU provider runs fast, such as
    MaxUnpool, which onnxruntime's CUDA provider lacks)."""

    @property
    def opset(self) -> int:
        """The model's ai.onnx opset."""
        return self.info.opset

    def input(self, i: int) -> str:
        """Name of input ``i`` ("" when absent)."""
        return self.node.input[i] if i < len(self.node.input) else ""

    def output(self, i: int) -> str:
        """Name of output ``i`` ("" when absent)."""
        return self.node.output[i] if i < len(self.node.output) else ""

    def has_input(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return bool(self.input(i))

    def attr(self, name: str, default: Any = None) -> Any:
        """Value of an attribute as ``graph.info.node_attributes`` reads it, or ``default``."""
        return node_attributes(self.node).get(name, default)

    def cotangent(self, gy: Cotangents, i: int = 0) -> str:
        """The cotangent of output ``i``, for a rule that needs it (an error naming the node
        when output ``i`` does not reach the seed)."""
        g = gy[i] if i < len(gy) else None
        if g is None:
            raise self.error(f"output {i} carries no cotangent, and its rule needs one")
        return g

    def forward_output(self, i: int, elem_type: int, shape: Shape | None = None) -> str:
        """Name of the forward node's output ``i``, which the node is made to produce when it
        does not yet (MaxPool's Indices): a rule that needs an optional output asks for it here
        rather than recomputing it. ``elem_type`` and ``shape`` are that output's type."""
        if self.output(i):
            return self.output(i)
        name = self.b.fresh(f"{self.node.op_type.lower()}_output{i}")
        while len(self.node.output) <= i:
            self.node.output.append("")
        self.node.output[i] = name
        self.info.add_type(name, elem_type, shape)
        return name

    def shape(self, name: str) -> Shape | None:
        """Inferred shape of a tensor (ints, symbolic strings, None)."""
        return self.info.shape(name)

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape when fully known."""
        return self.info.static_shape(name)

    def rank(self, name: str) -> int:
        """Rank of a tensor; rules that need it fail clearly when it is unknown."""
        rank = self.info.rank(name)
        if rank is None:
            raise self.error(f"rank of {name!r} is unknown")
        return rank

    def const(self, name: str) -> np.ndarray | None:
        """Constant value of an input (initializer or Constant), else None."""
        return self.info.const(name) if name else None

    def const_ints(self, i: int) -> list[int] | None:
        """Input ``i`` as a list of ints when it is a constant."""
        value = self.const(self.input(i))
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    @property
    def elem_type(self) -> int:
        """Element type of the node's first floating-point tensor (the rule's working type)."""
        for name in [*self.node.input, *self.node.output]:
            if name and self.info.is_float(name):
                return self.info.elem_type(name)
        return onnx.TensorProto.FLOAT

    def scalar(self, value: float) -> str:
        """A 0-D constant in the node's working type."""
        return self.b.scalar(value, self.elem_type)

    def error(self, why: str) -> GraphBuildError:
        """An error naming this node, for a rule to raise."""
        return GraphBuildError(f"cannot differentiate {node_label(self.node)}: {why}")


@dataclass(frozen=True)
class RuleEntry:
    """One registered rule and the opsets it is valid for."""

    op_type: str
    domain: str
    since: int
    until: int | None
    rule: Rule | None  # None: declared to have no gradient (outputs are piecewise constant).


class Registry:
    """Rules by ``(domain, op_type)``, each with an opset range."""

    def __init__(self) -> None:
        """Starts empty."""
        self._entries: dict[tuple[str, str], list[RuleEntry]] = {}

    def add(self, entry: RuleEntry) -> None:
        """Registers a rule; overlapping opset ranges for one op are a programming error."""
        entries = self._entries.setdefault((entry.domain, entry.op_type), [])
        for other in entries:
            if _overlaps(other, entry):
                raise ValueError(f"overlapping VJP rules for {entry.op_type}")
        entries.append(entry)

    def lookup(self, op_type: str, domain: str, opset: int) -> RuleEntry | None:
        """The entry valid for this op at this opset, or None."""
        domain = "" if domain in DEFAULT_DOMAINS else domain
        for entry in self._entries.get((domain, op_type), []):
            if entry.since <= opset and (entry.until is None or opset <= entry.until):
                return entry
        return None

    def entries(self) -> list[RuleEntry]:
        """All entries, sorted by domain and op type (for documentation)."""
        return sorted(
            (e for group in self._entries.values() for e in group),
            key=lambda e: (e.domain, e.op_type, e.since),
        )


def _overlaps(a: RuleEntry, b: RuleEntry) -> bool:
    a_end = a.until if a.until is not None else 10**9
    b_end = b.until if b.until is not None else 10**9
    return a.since <= b_end and b.since <= a_end


REGISTRY = Registry()


def vjp(*op_types: str, domain: str = "", since: int = 1,
        until: int | None = None) -> Callable[[Rule], Rule]:
    """Registers the decorated function as the VJP rule of ``op_types``."""

    def register(rule: Rule) -> Rule:
        for op_type in op_types:
            REGISTRY.add(RuleEntry(op_type, domain, since, until, rule))
        return rule

    return register


def no_gradient(*op_types: str, domain: str = "") -> None:
    """Declares ops whose outputs carry no gradient (integer-valued or piecewise constant)."""
    for op_type in op_types:
        REGISTRY.add(RuleEntry(op_type, domain, 1, None, None))
