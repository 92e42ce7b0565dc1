"""RNN, GRU and LSTM bodies for the onnx reference evaluator, as onnxruntime computes them.

The stock reference bodies know neither sequence_lens nor activations, and onnxruntime has no
float64 kernels for these ops, so the float64 finite differences of the adjoint test
(fg_onnx.grad.check) run these: every direction, both layouts, sequence_lens (steps past a
sequence's end output zeros and keep the state), initial states, activations with
onnxruntime's alpha/beta consumption, GRU's linear_before_reset, LSTM's peepholes, clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from onnx.reference.op_run import OpRun

Activation = Callable[[np.ndarray], np.ndarray]
DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"],
                       "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
ALPHA_BETA = {
    # name: (takes alpha, takes beta, default alpha, default beta), as onnxruntime reads them
    "affine": (True, True, 0.0, 0.0), "relu": (False, False, 0.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0), "thresholdedrelu": (True, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0), "scaledtanh": (True, True, 0.0, 0.0),
    "sigmoid": (False, False, 0.0, 0.0), "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0), "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
}


def activation_parameters(names: list[str], alphas: list[float], betas: list[float],
                          ) -> list[tuple[str, float, float]]:
    """(lower-case name, alpha, beta) per activation: alpha and beta values are consumed in
    order by the functions that take them, defaults after the lists run out."""
    alpha_iter, beta_iter = iter(alphas), iter(betas)
    result = []
    for name in names:
        key = name.lower()
        if key not in ALPHA_BETA:
            raise ValueError(f"unknown activation {name!r}")
        takes_alpha, takes_beta, alpha, beta = ALPHA_BETA[key]
        alpha = _next(alpha_iter, alpha) if takes_alpha else alpha
        beta = _next(beta_iter, beta) if takes_beta else beta
        result.append((key, alpha, beta))
    return result


def _next(values: Iterator[float], default: float) -> float:
    return float(next(values, default))


def _function(name: str, alpha: float, beta: float) -> Activation:
    table: dict[str, Activation] = {
        "affine": lambda x: alpha * x + beta,
        "relu": lambda x: np.maximum(x, 0.0),
        "leakyrelu": lambda x: np.where(x >= 0, x, alpha * x),
        "thresholdedrelu": lambda x: np.where(x > alpha, x, 0.0),
        "tanh": np.tanh,
        "scaledtanh": lambda x: alpha * np.tanh(beta * x),
        "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "hardsigmoid": lambda x: np.clip(alpha * x + beta, 0.0, 1.0),
        "elu": lambda x: np.where(x >= 0, x, alpha * (np.exp(x) - 1.0)),
        "softsign": lambda x: x / (1.0 + np.abs(x)),
        "softplus": lambda x: np.log1p(np.exp(x)),
    }
    return table[name]


class _Recurrent(OpRun):
    op_domain = ""
    op_name = ""
    gates = 1

    def _run(self, *inputs: Any, **attrs: Any) -> tuple[np.ndarray, ...]:
        args = list(inputs) + [None] * (8 - len(inputs))
        x, w, r, bias, lens, h0 = args[:6]
        layout = int(attrs.get("layout") or 0)
        if layout:
            x = np.swapaxes(x, 0, 1)
        steps, batch, _ = x.shape
        directions, rows, hidden = w.shape[0], w.shape[1], r.shape[-1]
        dtype = x.dtype
        states = [self._initial(h0, layout, directions, batch, hidden, dtype)]
        if self.op_name == "LSTM":
            states.append(self._initial(args[6], layout, directions, batch, hidden, dtype))
        bias = np.zeros((directions, 2 * rows), dtype) if bias is None else bias
        lengths = np.full(batch, steps) if lens is None else np.asarray(lens).astype(np.int64)
        # the schema's defaults (two Tanh for RNN) are not what onnxruntime uses
        given = {a.name for a in self.onnx_node.attribute}
        names = (list(attrs["activations"]) if "activations" in given
                 else DEFAULT_ACTIVATIONS[self.op_name] * directions)
        params = activation_parameters(names, list(attrs.get("activation_alpha") or []),
                                       list(attrs.get("activation_beta") or []))
        functions = [_function(*p) for p in params]
        per_direction = len(functions) // directions
        direction = attrs.get("direction") or "forward"
        ys = np.zeros((steps, directions, batch, hidden), dtype)
        finals: list[list[np.ndarray]] = [[] for _ in states]
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            peephole = None if args[7] is None else args[7][d]
            step = self._stepper(w[d], r[d], bias[d], peephole,
                                 functions[d * per_direction:(d + 1) * per_direction], attrs)
            final = self._direction(x, [s[d] for s in states], lengths, reverse, step, ys, d)
            for slot, value in zip(finals, final, strict=True):
                slot.append(value)
        outputs = [ys, *[np.stack(f) for f in finals]]
        if layout:
            outputs = [np.transpose(outputs[0], (2, 0, 1, 3)),
                       *[np.swapaxes(o, 0, 1) for o in outputs[1:]]]
        return tuple(outputs[:len(self.onnx_node.output)])

    @staticmethod
    def _initial(value: np.ndarray | None, layout: int, directions: int, batch: int,
                 hidden: int, dtype: Any) -> np.ndarray:
        if value is None:
            return np.zeros((directions, batch, hidden), dtype)
        return np.swapaxes(value, 0, 1) if layout else value

    @staticmethod
    def _direction(x: np.ndarray, states: list[np.ndarray], lengths: np.ndarray, reverse: bool,
                   step: Callable[..., list[np.ndarray]], ys: np.ndarray, d: int,
                   ) -> list[np.ndarray]:
        states = [s.copy() for s in states]
        batch = x.shape[1]
        for s in range(x.shape[0]):
            for n in range(batch):
                if s >= lengths[n]:
                    continue
                t = lengths[n] - 1 - s if reverse else s
                new = step(x[t, n], *[state[n] for state in states])
                for state, value in zip(states, new, strict=True):
                    state[n] = value
                ys[t, d, n] = new[0]
        return states

    def _stepper(self, w: np.ndarray, r: np.ndarray, bias: np.ndarray,
                 peephole: np.ndarray | None, functions: list[Activation],
                 attrs: dict[str, Any]) -> Callable[..., list[np.ndarray]]:
        raise NotImplementedError


def _clipper(attrs: dict[str, Any]) -> Activation:
    clip = attrs.get("clip")
    if clip is None:
        return lambda a: a
    return lambda a: np.clip(a, -float(clip), float(clip))


class RNN(_Recurrent):
    """h' = f(x Wᵀ + h Rᵀ + Wb + Rb)."""

    op_name = "RNN"

    def _stepper(self, w: np.ndarray, r: np.ndarray, bias: np.ndarray,
                 peephole: np.ndarray | None, functions: list[Activation],
                 attrs: dict[str, Any]) -> Callable[..., list[np.ndarray]]:
        clip, (f,) = _clipper(attrs), functions
        wb, rb = np.split(bias, 2)
        return lambda x, h: [f(clip(w @ x + r @ h + wb + rb))]


class GRU(_Recurrent):
    """Gates z, r, h; linear_before_reset applies the reset after the recurrent product."""

    op_name = "GRU"

    def _stepper(self, w: np.ndarray, r: np.ndarray, bias: np.ndarray,
                 peephole: np.ndarray | None, functions: list[Activation],
                 attrs: dict[str, Any]) -> Callable[..., list[np.ndarray]]:
        clip, (f, g) = _clipper(attrs), functions
        wb, rb = np.split(bias, 2)
        hidden = r.shape[-1]
        after = bool(attrs.get("linear_before_reset") or 0)

        def step(x: np.ndarray, h: np.ndarray) -> list[np.ndarray]:
            xw = w @ x + wb
            hr = r[:2 * hidden] @ h + rb[:2 * hidden]
            z = f(clip(xw[:hidden] + hr[:hidden]))
            reset = f(clip(xw[hidden:2 * hidden] + hr[hidden:]))
            rh, rbh = r[2 * hidden:], rb[2 * hidden:]
            recurrent = reset * (rh @ h + rbh) if after else rh @ (reset * h) + rbh
            candidate = g(clip(xw[2 * hidden:] + recurrent))
            return [(1.0 - z) * candidate + z * h]

        return step


class LSTM(_Recurrent):
    """Gates i, o, f, c; peepholes P (i, o, f) read the previous cell (the output gate the
    new one)."""

    op_name = "LSTM"

    def _stepper(self, w: np.ndarray, r: np.ndarray, bias: np.ndarray,
                 peephole: np.ndarray | None, functions: list[Activation],
                 attrs: dict[str, Any]) -> Callable[..., list[np.ndarray]]:
        clip, (f, g, h_act) = _clipper(attrs), functions
        wb, rb = np.split(bias, 2)
        hidden = r.shape[-1]
        p = np.zeros(3 * hidden) if peephole is None else peephole
        pi, po, pf = np.split(p, 3)
        coupled = bool(attrs.get("input_forget") or 0)

        def step(x: np.ndarray, h: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
            a = w @ x + r @ h + wb + rb
            ai, ao, af, ac = np.split(a, 4)
            i = f(clip(ai + pi * c))
            forget = 1.0 - i if coupled else f(clip(af + pf * c))
            cell = forget * c + i * g(clip(ac))
            o = f(clip(ao + po * cell))
            return [o * h_act(cell), cell]

        return step


RECURRENT_REFERENCE_OPS = [RNN, GRU, LSTM]
