"""Numerical checks of gradient graphs: the adjoint (dot-product) test against finite differences.

``check_vjp`` compares ⟨u, VJP(v)⟩ with ⟨JVP(u), v⟩, the JVP taken by central differences in
float64 (onnxruntime when it has float64 kernels for every op, else the onnx reference
evaluator), and checks that the float32 gradient graph gives the same VJP on onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops import op_max_pool, op_scan
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _RefConvTranspose

from fg_onnx.grad import SEED_INPUT, gradient_model
from fg_onnx.grad.recurrent_reference import RECURRENT_REFERENCE_OPS
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import lower_ir_version

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], list[np.ndarray]]


@dataclass
class VJPCheck:
    """Outcome of :func:`check_vjp`."""

    lhs: float
    """⟨u, VJP(v)⟩ from the float64 gradient graph."""
    rhs: float
    """⟨JVP(u), v⟩ by central differences in float64."""
    float32_error: float
    """Max relative difference between the onnxruntime float32 VJP and the float64 one."""
    wrong_shapes: tuple[str, ...] = ()
    """The differentiated inputs whose gradient's shape is not theirs."""

    @property
    def adjoint_error(self) -> float:
        """Relative mismatch of the two inner products."""
        return abs(self.lhs - self.rhs) / max(abs(self.lhs), abs(self.rhs), 1e-12)


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64 (initializers, constants, casts, types, in
    subgraphs too)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _graph_to_float64(copy.graph)
    return copy


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init).astype(np.float64)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attr in list(node.attribute):
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                array = numpy_helper.to_array(attr.t).astype(np.float64)
                attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
            if attr.type == onnx.AttributeProto.GRAPH:
                _graph_to_float64(attr.g)
            if attr.name == "value_float":
                # value_float is float32 by definition; a float64 tensor keeps the precision.
                tensor = numpy_helper.from_array(np.array(attr.f, dtype=np.float64))
                node.attribute.remove(attr)
                node.attribute.append(helper.make_attribute("value", tensor))
    del graph.value_info[:]


class ConvTranspose(_RefConvTranspose):  # type: ignore[misc]
    """The reference ConvTranspose slices grouped weights by output channels; W's first axis
    holds input channels, so groups are split here and run one by one."""

    op_domain = ""

    def _run(self, X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None,
             **attrs: Any) -> tuple[np.ndarray]:
        group = int(attrs.get("group") or 1)
        if group == 1:
            return super()._run(X, W, B, **attrs)  # type: ignore[no-any-return]
        attrs = {**attrs, "group": 1}
        parts = [
            super(ConvTranspose, self)._run(x, w, None, **attrs)[0]
            for x, w in zip(np.split(X, group, axis=1), np.split(W, group, axis=0), strict=True)
        ]
        out = np.concatenate(parts, axis=1)
        if B is not None:
            out = out + B.reshape((1, -1) + (1,) * (out.ndim - 2))
        return (out.astype(X.dtype),)


_erf = np.vectorize(math.erf, otypes=[np.float64])


class Erf(OpRun):
    """The reference Erf rounds through float32, which ruins float64 finite differences."""

    op_domain = ""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(_erf(x)).astype(x.dtype),)


class Gelu(OpRun):
    """Gelu in float64 (the reference expands it into its float32-rounding Erf)."""

    op_domain = ""

    def _run(self, x: np.ndarray, approximate: str | None = None) -> tuple[np.ndarray]:
        x64 = x.astype(np.float64)
        if approximate == "tanh":
            inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
            y = 0.5 * x64 * (1.0 + np.tanh(inner))
        else:
            y = 0.5 * x64 * (1.0 + np.asarray(_erf(x64 / math.sqrt(2.0))))
        return (y.astype(x.dtype),)


class MeanVarianceNormalization(OpRun):
    """The reference expands MeanVarianceNormalization into its function, whose float32
    epsilon does not add to float64 tensors."""

    op_domain = ""

    def _run(self, x: np.ndarray, axes: Any = None) -> tuple[np.ndarray]:
        reduced = tuple(int(a) for a in (axes if axes is not None else [0, 2, 3]))
        centred = x - x.mean(axis=reduced, keepdims=True)
        std = np.sqrt((centred * centred).mean(axis=reduced, keepdims=True))
        return ((centred / (std + 1e-9)).astype(x.dtype),)


class MaxUnpool(OpRun):
    """The reference MaxUnpool ignores ``output_shape`` when the pooling had pads or
    ceil_mode; this one places each value at its flat index in a tensor of that shape."""

    op_domain = ""

    def _run(self, x: np.ndarray, indices: np.ndarray, output_shape: np.ndarray | None = None,
             kernel_shape: Any = None, pads: Any = None, strides: Any = None
             ) -> tuple[np.ndarray]:
        if output_shape is None:
            raise ValueError("MaxUnpool without output_shape is not used by fg-onnx")
        out = np.zeros(int(np.prod(output_shape)), dtype=x.dtype)
        out[indices.reshape(-1)] = x.reshape(-1)
        return (out.reshape(tuple(int(d) for d in output_shape)),)


_RefMaxPool: Any = op_max_pool.MaxPool  # untyped base: seen as Any, not as a typed override


class MaxPool(_RefMaxPool):  # type: ignore[misc]
    """The reference MaxPool gives SAME_LOWER outputs too few rows; auto_pad is resolved into
    the explicit pads the spec defines before it runs."""

    op_domain = ""

    def _run(self, x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, ...]:
        auto_pad = attrs.get("auto_pad")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            kernel = list(attrs["kernel_shape"])
            strides = list(attrs.get("strides") or [1] * len(kernel))
            dilations = list(attrs.get("dilations") or [1] * len(kernel))
            begins, ends = [], []
            for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begins.append(small if auto_pad == "SAME_UPPER" else large)
                ends.append(large if auto_pad == "SAME_UPPER" else small)
            attrs = {**attrs, "auto_pad": "NOTSET", "pads": begins + ends}
        return super()._run(x, **attrs)  # type: ignore[no-any-return]


class LRN(OpRun):
    """The reference LRN loops over the batch axis instead of the channels (and takes 4-D
    inputs only); this one follows the spec's channel window for any rank."""

    op_domain = ""

    def _run(self, x: np.ndarray, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0,
             size: int = 1) -> tuple[np.ndarray]:
        alpha, beta, bias = float(alpha), float(beta), float(bias)
        squares = x.astype(np.float64) ** 2
        below, above = (size - 1) // 2, size - 1 - (size - 1) // 2
        window = np.stack([
            squares[:, max(0, c - below):c + above + 1].sum(axis=1) for c in range(x.shape[1])
        ], axis=1)
        return ((x / (bias + alpha / size * window) ** beta).astype(x.dtype),)


_RefScan: Any = op_scan.Scan  # untyped base: its attributes come from the node


class Scan(_RefScan):  # type: ignore[misc]
    """The reference Scan runs forward only; this one follows scan_input_directions and
    scan_output_directions (along axis 0, the only axis fg-onnx's Scans use)."""

    op_domain = ""

    def __init__(self, onnx_node: onnx.NodeProto, run_params: Any) -> None:
        OpRun.__init__(self, onnx_node, run_params)
        self.input_names = self.body.input_names
        self.output_names = self.body.output_names

    def _run(self, *args: np.ndarray, context: Any = None, bindings: Any = None,
             **attrs: Any) -> tuple[np.ndarray, ...]:
        count = len(args) - int(self.num_scan_inputs)
        in_dirs = list(self.scan_input_directions or []) + [0] * len(args)
        sequences = [v[::-1] if d else v for v, d in zip(args[count:], in_dirs, strict=False)]
        states = list(args[:count])
        stacked: list[list[np.ndarray]] = [[] for _ in self.output_names[count:]]
        for step in range(sequences[0].shape[0]):
            feeds = dict(context or {})
            feeds.update(zip(self.input_names[:count], states, strict=True))
            feeds.update((n, v[step]) for n, v in zip(self.input_names[count:], sequences,
                                                        strict=True))
            values = self._run_body(feeds, bindings=bindings)
            states = list(values[:count])
            for slot, value in zip(stacked, values[count:], strict=True):
                slot.append(value)
        out_dirs = list(self.scan_output_directions or []) + [0] * len(stacked)
        outputs = [np.stack(s)[::-1] if d else np.stack(s)
                   for s, d in zip(stacked, out_dirs, strict=False)]
        return (*states, *outputs)


def reference_evaluator(model: onnx.ModelProto) -> ReferenceEvaluator:
    """The onnx reference evaluator with fg-onnx's corrections to its op bodies."""
    return ReferenceEvaluator(model, new_ops=[ConvTranspose, Erf, Gelu, MaxPool, MaxUnpool, LRN,
                                              MeanVarianceNormalization, Scan,
                                              *RECURRENT_REFERENCE_OPS])


# onnxruntime's float64 kernels of these ops compute in float32, too coarse for differences.
ORT_FLOAT32_INTERNALLY = frozenset({"Shrink"})


def make_runner(model: onnx.ModelProto, fallback: bool = True) -> Runner:
    """Runs ``model`` on onnxruntime (all optimisations off), or, with ``fallback``, on the
    reference evaluator when onnxruntime has no kernel for some op and type."""
    names = [o.name for o in model.graph.output]
    if not fallback:
        session = _ort_session(model)
        return lambda feeds: [np.asarray(v) for v in session.run(names, feeds)]
    if any(node.op_type in ORT_FLOAT32_INTERNALLY for node in model.graph.node):
        evaluator = reference_evaluator(model)
        return lambda feeds: [np.asarray(v) for v in evaluator.run(names, feeds)]
    try:
        session = _ort_session(model)
    except Exception:
        evaluator = reference_evaluator(model)
        return lambda feeds: [np.asarray(v) for v in evaluator.run(names, feeds)]

    def run(feeds: Feeds) -> list[np.ndarray]:
        try:
            return [np.asarray(v) for v in session.run(names, feeds)]
        except Exception:
            evaluator = reference_evaluator(model)
            return [np.asarray(v) for v in evaluator.run(names, feeds)]

    return run


def _ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _dot(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    return float(sum(np.vdot(a[k].astype(np.float64), b[k].astype(np.float64)) for k in a))


def check_vjp(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    wrt: Sequence[str] | None = None,
    output: str | None = None,
    eps: float = 1e-6,
    seed: int = 0,
    provider: str = "any",
    float32_fallback: bool = False,
) -> VJPCheck:
    """Runs the adjoint test of the gradient of ``output`` w.r.t. ``wrt`` at ``inputs``.

    Args:
        model: a float32 model.
        inputs: values for every graph input (float ones are perturbed when in ``wrt``).
        wrt: the graph inputs to differentiate (default: every float input).
        output: the differentiated output (default: the first).
        eps: central-difference step, in float64.
        seed: seed of the random directions ``u`` and cotangent ``v``.
        provider: passed to :func:`gradient_model` (the float32 check runs on the CPU).
        float32_fallback: run the float32 graph on the reference evaluator where
            onnxruntime cannot (it runs no layout=1 recurrent op).
    """
    info = GraphInfo(model)
    output = output or info.graph_outputs[0]
    wrt = list(wrt) if wrt is not None else [n for n in info.graph_inputs if info.is_float(n)]
    rng = np.random.default_rng(seed)
    x64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in inputs.items()}
    forward64 = make_runner(to_float64(only_output(model, output)))
    y = forward64(x64)[0]
    u = {k: rng.standard_normal(np.shape(inputs[k])) for k in wrt}
    v = rng.standard_normal(y.shape)
    plus = forward64({**x64, **{k: x64[k] + eps * u[k] for k in wrt}})[0]
    minus = forward64({**x64, **{k: x64[k] - eps * u[k] for k in wrt}})[0]
    rhs = float(np.vdot((plus - minus) / (2 * eps), v))
    grad_model = gradient_model(only_output(model, output), output, wrt, provider)
    grads64 = _run_grads(make_runner(to_float64(grad_model)), x64, v, wrt)
    grads32 = _run_grads(
        make_runner(grad_model, fallback=float32_fallback), dict(inputs),
        v.astype(helper.tensor_dtype_to_np_dtype(info.elem_type(output))), wrt,
    )
    scale = max(max(float(np.abs(g).max(initial=0.0)) for g in grads64.values()), 1e-12)
    float32_error = max(float(np.abs(grads32[k] - grads64[k]).max(initial=0.0)) for k in wrt)
    wrong_shapes = tuple(k for k in wrt if grads32[k].shape != np.shape(inputs[k]))
    return VJPCheck(lhs=_dot(u, grads64), rhs=rhs, float32_error=float32_error / scale,
                    wrong_shapes=wrong_shapes)


def only_output(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """A copy of ``model`` with ``output`` as its only output."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [o for o in copy.graph.output if o.name == output]
    del copy.graph.output[:]
    copy.graph.output.extend(kept)
    return copy


def _run_grads(run: Runner, feeds: Feeds, seed_value: np.ndarray,
               wrt: Sequence[str]) -> dict[str, np.ndarray]:
    values = run({**feeds, SEED_INPUT: seed_value})
    return dict(zip(wrt, values[1:], strict=True))


def single_node_model(
    op_type: str,
    inputs: Sequence[tuple[str, np.ndarray | Any]],
    outputs: int = 1,
    opset: int = 17,
    **attrs: Any,
) -> tuple[onnx.ModelProto, Feeds]:
    """A model of one node for rule tests.

    ``inputs`` are ``(name, value)`` pairs: names starting with ``w:`` become initializers
    (constants), others graph inputs fed with ``value``; an empty name is an omitted input.
    Returns the model and the feeds for its graph inputs.
    """
    graph_inputs, initializers, feeds, names = [], [], {}, []
    for name, value in inputs:
        if not name:
            names.append("")
            continue
        array = np.asarray(value)
        if name.startswith("w:"):
            clean = name[2:]
            initializers.append(numpy_helper.from_array(array, clean))
            names.append(clean)
        else:
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
            feeds[name] = array
            names.append(name)
    out_names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op_type, names, out_names, name=f"{op_type.lower()}_node", **attrs)
    graph = helper.make_graph(
        [node], "single", graph_inputs,
        [helper.make_empty_tensor_value_info(n) for n in out_names], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    lower_ir_version(model)
    model = onnx.shape_inference.infer_shapes(model)
    return model, feeds
