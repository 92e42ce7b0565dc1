"""Expanding the com.microsoft ops of onnxruntime's offline optimiser back into ai.onnx ops.

A model saved with ``optimized_model_filepath`` at the extended optimisation level holds fused
kernels (FusedConv, FusedMatMul, BiasGelu, SkipLayerNormalization, and, from its transformer
optimiser, Attention). Each one here is
rewritten, in place and in the graph's order, into the standard ops it fused, writing the same
output names, so that the gradient rules see ordinary ops and the model's outputs keep their
values. The others stay and are refused on the gradient path (errors.UnsupportedOpsError).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import onnx

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo, node_attributes, node_label

MICROSOFT_DOMAIN = "com.microsoft"
CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")
TANH_GELU_SCALE = math.sqrt(2.0 / math.pi)
TANH_GELU_CUBIC = 0.044715
QUICK_GELU_ALPHA = 1.702


class _Expansion:
    """One fused node being rewritten: its inputs, attributes and a builder for the new ops."""

    def __init__(self, b: GraphBuilder, node: onnx.NodeProto) -> None:
        self.b, self.node = b, node
        self.attrs: dict[str, Any] = {
            k: v.decode() if isinstance(v, bytes) else v for k, v in node_attributes(node).items()
        }
        self.elem_type = next(
            (b.info.elem_type(n) for n in node.input if n and b.info.elem_type(n)),
            onnx.TensorProto.FLOAT,
        )

    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def output(self, i: int) -> str:
        return self.node.output[i] if i < len(self.node.output) else ""

    def scalar(self, value: float) -> str:
        return self.b.scalar(value, self.elem_type)

    def picked(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {k: self.attrs[k] for k in names if k in self.attrs}

    def refuse(self, why: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"cannot expand {node_label(self.node)} into standard ops: {why}; " + REEXPORT_HINT)


REEXPORT_HINT = ("save the model from onnxruntime with graph_optimization_level "
                 "ORT_ENABLE_BASIC or lower, or export it again")


def _activation(e: _Expansion, x: str, out: str) -> None:
    """The ``activation`` attribute of FusedConv/FusedGemm applied to ``x``, written to ``out``."""
    kind = str(e.attrs.get("activation", ""))
    params = [float(p) for p in e.attrs.get("activation_params", [])]
    if not params and "activation_alpha" in e.attrs:  # FusedGemm names them one by one
        params = [float(e.attrs["activation_alpha"]), float(e.attrs.get("activation_beta", 0))]
    b = e.b
    if kind in ("", "Identity"):
        b.op_multi("Identity", x, outputs=[out])
    elif kind in ("Relu", "Sigmoid", "Tanh"):
        b.op_multi(kind, x, outputs=[out])
    elif kind == "LeakyRelu":
        b.op_multi(kind, x, outputs=[out], alpha=params[0] if params else 0.01)
    elif kind == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params):])[:2]
        b.op_multi(kind, x, outputs=[out], alpha=alpha, beta=beta)
    elif kind == "Clip" and len(params) == 2:
        b.op_multi(kind, x, e.scalar(params[0]), e.scalar(params[1]), outputs=[out])
    else:
        raise e.refuse(f"activation {kind!r} with parameters {params} is not known")


def _fused_conv(e: _Expansion) -> None:
    """Conv, plus the optional sum input Z, then the activation."""
    y = e.b.Conv(e.input(0), e.input(1), e.input(2) or None, **e.picked(CONV_ATTRIBUTES))
    if e.input(3):
        y = e.b.Add(y, e.input(3))
    _activation(e, y, e.output(0))


def _fused_gemm(e: _Expansion) -> None:
    y = e.b.Gemm(e.input(0), e.input(1), e.input(2) or None, **e.picked(GEMM_ATTRIBUTES))
    _activation(e, y, e.output(0))


def _operand(e: _Expansion, x: str, batch: bool, transposed: bool) -> str:
    """op(x): with ``batch`` (transBatch) its first axis moves behind the batch axes, as the
    row axis; with ``transposed`` its last two axes swap."""
    if not batch and not transposed:
        return x
    rank = e.b.info.rank(x)
    if rank is None and not batch:  # behind another fused op, which inference does not follow
        return e.b.Einsum(x, equation="...ij->...ji")
    if rank is None or rank < (3 if batch else 2):
        raise e.refuse(f"{x!r} has rank {rank}, too low or unknown for its transpose")
    perm = [*range(1, rank - 1), 0, rank - 1] if batch else list(range(rank))
    if transposed:
        perm[-2], perm[-1] = perm[-1], perm[-2]
    return e.b.Transpose(x, perm=perm)


def _fused_matmul(e: _Expansion) -> None:
    """alpha · op(A) @ op(B), each op a transpose (_operand)."""
    a = _operand(e, e.input(0), bool(e.attrs.get("transBatchA", 0)),
                 bool(e.attrs.get("transA", 0)))
    b = _operand(e, e.input(1), bool(e.attrs.get("transBatchB", 0)),
                 bool(e.attrs.get("transB", 0)))
    alpha = float(e.attrs.get("alpha", 1.0))
    if alpha == 1.0:
        e.b.op_multi("MatMul", a, b, outputs=[e.output(0)])
    else:
        e.b.op_multi("Mul", e.b.MatMul(a, b), e.scalar(alpha), outputs=[e.output(0)])


def _erf_gelu(e: _Expansion, x: str) -> None:
    b = e.b
    half_x = b.Mul(x, e.scalar(0.5))
    erf = b.Erf(b.Mul(x, e.scalar(1.0 / math.sqrt(2.0))))
    b.op_multi("Mul", half_x, b.Add(erf, e.scalar(1.0)), outputs=[e.output(0)])


def _biased(e: _Expansion) -> str:
    return e.b.Add(e.input(0), e.input(1)) if e.input(1) else e.input(0)


def _fast_gelu(e: _Expansion) -> None:
    """0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), x = input + bias."""
    b, x = e.b, _biased(e)
    cubic = b.Mul(b.Mul(b.Mul(x, x), x), e.scalar(TANH_GELU_CUBIC))
    tanh = b.Tanh(b.Mul(b.Add(x, cubic), e.scalar(TANH_GELU_SCALE)))
    b.op_multi("Mul", b.Mul(x, e.scalar(0.5)), b.Add(tanh, e.scalar(1.0)),
               outputs=[e.output(0)])


def _quick_gelu(e: _Expansion) -> None:
    """x · sigmoid(alpha x)."""
    x, alpha = e.input(0), float(e.attrs.get("alpha", QUICK_GELU_ALPHA))
    e.b.op_multi("Mul", x, e.b.Sigmoid(e.b.Mul(x, e.scalar(alpha))), outputs=[e.output(0)])


def _bias_add(e: _Expansion) -> None:
    e.b.op_multi("Add", e.b.Add(e.input(0), e.input(1)), e.input(2), outputs=[e.output(0)])


def _skip_layer_norm(e: _Expansion) -> None:
    """LayerNormalization over the last axis of input + skip (+ bias); the optional outputs
    are its mean, inverse standard deviation and the sum itself."""
    b = e.b
    total = b.Add(e.input(0), e.input(1))
    if e.input(4):
        total = b.Add(total, e.input(4))
    if e.output(3):
        b.op_multi("Identity", total, outputs=[e.output(3)])
    outputs = [e.output(0), e.output(1), e.output(2)]
    while outputs and not outputs[-1]:
        outputs.pop()
    b.op_multi("LayerNormalization", total, e.input(2), e.input(3) or None, outputs=outputs,
               axis=-1, epsilon=float(e.attrs.get("epsilon", 1e-12)))


def _attention(e: _Expansion) -> None:
    """Multi-head self-attention from one packed projection: softmax(q kᵀ · scale) v."""
    if any(e.input(i) for i in range(3, 8)) or e.attrs.get("unidirectional", 0):
        raise e.refuse("attention masks, past state and unidirectional attention are not "
                       "supported")
    weights = e.b.info.static_shape(e.input(1))
    sizes = [int(v) for v in e.attrs.get("qkv_hidden_sizes", [])]
    if not sizes and weights is not None and weights[-1] % 3 == 0:
        sizes = [weights[-1] // 3] * 3
    heads = int(e.attrs["num_heads"])
    if len(sizes) != 3 or sizes[0] % heads:
        raise e.refuse("the sizes of q, k and v are unknown")
    b = e.b
    packed = b.MatMul(e.input(0), e.input(1))
    packed = b.Add(packed, e.input(2)) if e.input(2) else packed
    q, k, v = (
        b.Transpose(b.Reshape(part, b.ints([0, 0, heads, -1])), perm=[0, 2, 1, 3])
        for part in b.op_multi("Split", packed, b.ints(sizes), outputs=3, axis=-1)
    )
    scale = float(e.attrs.get("scale", 0.0)) or 1.0 / math.sqrt(sizes[0] // heads)
    scores = b.Mul(b.MatMul(q, b.Transpose(k, perm=[0, 1, 3, 2])), e.scalar(scale))
    mixed = b.Transpose(b.MatMul(b.Softmax(scores, axis=-1), v), perm=[0, 2, 1, 3])
    b.op_multi("Reshape", mixed, b.ints([0, 0, -1]), outputs=[e.output(0)])


EXPANSIONS: dict[str, Callable[[_Expansion], None]] = {
    "Attention": _attention,
    "FusedConv": _fused_conv,
    "FusedGemm": _fused_gemm,
    "FusedMatMul": _fused_matmul,
    "BiasGelu": lambda e: _erf_gelu(e, _biased(e)),
    "Gelu": lambda e: _erf_gelu(e, e.input(0)),
    "FastGelu": _fast_gelu,
    "QuickGelu": _quick_gelu,
    "BiasAdd": _bias_add,
    "SkipLayerNormalization": _skip_layer_norm,
}


def expand_fused_ops(model: onnx.ModelProto) -> int:
    """Rewrites every com.microsoft node of EXPANSIONS in place; returns how many."""
    if not any(n.domain == MICROSOFT_DOMAIN and n.op_type in EXPANSIONS
               for n in model.graph.node):
        return 0
    builder = GraphBuilder(GraphInfo(model), prefix="fg_expanded")
    nodes: list[onnx.NodeProto] = []
    expanded = 0
    for node in model.graph.node:
        expand = EXPANSIONS.get(node.op_type) if node.domain == MICROSOFT_DOMAIN else None
        if expand is None:
            nodes.append(node)
            continue
        expand(_Expansion(builder, node))
        nodes.extend(builder.nodes)
        builder.nodes = []
        expanded += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(builder.initializers)
    return expanded
