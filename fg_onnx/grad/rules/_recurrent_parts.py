"""Pieces of the recurrent rules (recurrent.py): the gate activations with their slopes, the
attribute checks, and Scan bodies built with their own GraphBuilder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnx import helper

from fg_onnx.grad.recurrent_reference import (
    ALPHA_BETA,
    DEFAULT_ACTIVATIONS,
    activation_parameters,
)
from fg_onnx.grad.registry import VJPContext
from fg_onnx.graph.builder import GraphBuilder

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@dataclass(frozen=True)
class Activation:
    """One gate nonlinearity of the ``activations`` attribute (lower-case name)."""

    name: str
    alpha: float
    beta: float

    def apply(self, b: GraphBuilder, x: str, elem: int) -> str:
        """f(x)."""
        alpha, beta = self.alpha, self.beta
        simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign",
                  "softplus": "Softplus"}
        if self.name in simple:
            return b.op(simple[self.name], x)
        if self.name == "affine":
            return b.Add(b.Mul(x, b.scalar(alpha, elem)), b.scalar(beta, elem))
        if self.name == "scaledtanh":
            return b.Mul(b.Tanh(b.Mul(x, b.scalar(beta, elem))), b.scalar(alpha, elem))
        if self.name == "hardsigmoid":
            return b.HardSigmoid(x, alpha=alpha, beta=beta)
        names = {"leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "elu": "Elu"}
        return b.op(names[self.name], x, alpha=alpha)

    def slope(self, b: GraphBuilder, x: str, y: str, elem: int) -> str:
        """f'(x), shaped like x, from the input x and the output y = f(x). At a kink the flat
        side (as the Relu rule)."""
        one = b.scalar(1.0, elem)
        if self.name == "sigmoid":
            return b.Mul(y, b.Sub(one, y))
        if self.name == "tanh":
            return b.Sub(one, b.Mul(y, y))
        if self.name in ("relu", "thresholdedrelu"):
            threshold = 0.0 if self.name == "relu" else self.alpha
            return b.Cast(b.Greater(x, b.scalar(threshold, elem)), to=elem)
        if self.name == "affine":
            return b.Expand(b.scalar(self.alpha, elem), b.Shape(x))
        if self.name == "leakyrelu":
            return b.Where(b.Less(x, b.scalar(0.0, elem)), b.scalar(self.alpha, elem),
                           b.Expand(one, b.Shape(x)))
        if self.name == "elu":
            return b.Where(b.Less(x, b.scalar(0.0, elem)), b.Add(y, b.scalar(self.alpha, elem)),
                           b.Expand(one, b.Shape(x)))
        if self.name == "scaledtanh":
            t = b.Tanh(b.Mul(x, b.scalar(self.beta, elem)))
            return b.Mul(b.Sub(one, b.Mul(t, t)), b.scalar(self.alpha * self.beta, elem))
        if self.name == "hardsigmoid":
            inside = b.And(b.Greater(y, b.scalar(0.0, elem)), b.Less(y, one))
            return b.Mul(b.Cast(inside, to=elem), b.scalar(self.alpha, elem))
        if self.name == "softsign":
            denominator = b.Add(one, b.Abs(x))
            return b.Reciprocal(b.Mul(denominator, denominator))
        return b.Sigmoid(x)  # softplus


def activations(ctx: VJPContext, directions: int) -> list[list[Activation]]:
    """The activations of each direction, with alpha and beta read as onnxruntime reads
    them (consumed in order by the functions that take them)."""
    op = ctx.node.op_type
    per_direction = len(DEFAULT_ACTIVATIONS[op])
    given = ctx.attr("activations")
    names = list(given) if given else DEFAULT_ACTIVATIONS[op] * directions
    if len(names) != per_direction * directions:
        raise ctx.error(f"activations lists {len(names)} functions; {op} with {directions} "
                        f"direction(s) takes {per_direction * directions}")
    unknown = [n for n in names if n.lower() not in ALPHA_BETA]
    if unknown:
        raise ctx.error(f"activation {unknown[0]!r} is not one of "
                        f"{', '.join(sorted(ALPHA_BETA))}")
    params = activation_parameters(names, list(ctx.attr("activation_alpha") or []),
                                   list(ctx.attr("activation_beta") or []))
    flat = [Activation(*p) for p in params]
    return [flat[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


def refuse_unsupported(ctx: VJPContext) -> None:
    """One-line refusals: what the rules do not differentiate."""
    if not ctx.output(0):
        raise ctx.error("the rule reads the hidden states from output Y, which the node "
                        "does not produce")
    weights = {1: "W", 2: "R", 3: "B", 7: "P"}
    for index, name in weights.items():
        if index < len(ctx.needs) and ctx.needs[index]:
            raise ctx.error(f"{name} depends on the explained input; only X, initial_h and "
                            "initial_c may carry a gradient")


Body = Callable[[GraphBuilder, list[str], list[str]], tuple[list[str], list[str]]]
"""(builder, states, step slices) -> (next states, per-step outputs)."""


def scan(ctx: VJPContext, states: list[str], sequences: list[str], body: Body,
         reverse: bool) -> tuple[list[str], list[str]]:
    """A Scan over axis 0 of ``sequences`` (last step first when ``reverse``; the per-step
    outputs are stacked in time order either way). Returns the final states and the stacked
    outputs. The body may read tensors of the outer graph by name."""
    prefix = ctx.b.fresh("scan")
    inner = GraphBuilder(ctx.info, prefix=prefix)
    state_in = [inner.fresh("state") for _ in states]
    step_in = [inner.fresh("step") for _ in sequences]
    next_states, step_out = body(inner, state_in, step_in)
    outputs, seen = [], set(state_in) | set(step_in)
    for name in [*next_states, *step_out]:
        outputs.append(inner.Identity(name) if name in seen else name)
        seen.add(name)
    elem = ctx.elem_type
    graph = helper.make_graph(
        inner.nodes, prefix.replace("/", "_"),
        [helper.make_tensor_value_info(n, elem, None) for n in [*state_in, *step_in]],
        [helper.make_tensor_value_info(n, elem, None) for n in outputs], inner.initializers)
    direction = int(reverse)
    results = ctx.b.op_multi(
        "Scan", *states, *sequences, outputs=len(outputs), body=graph,
        num_scan_inputs=len(sequences), scan_input_directions=[direction] * len(sequences),
        scan_output_directions=[direction] * len(step_out))
    return results[:len(states)], results[len(states):]
