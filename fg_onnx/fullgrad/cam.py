"""Grad-CAM and Grad-CAM++ built inside the graph, at one convolutional activation A.

Grad-CAM (Selvaraju et al., 2017): ReLU(Σ_c α_c A_c) with α_c the spatial mean of ∂score/∂A_c.
Grad-CAM++ (Chattopadhay et al., 2018), in the closed form of its exponential-score
assumption as pytorch-grad-cam computes it: α_c = Σ_ij a_ij ReLU(g_ij) with
a_ij = g_ij² / (2 g_ij² + Σ_ab A_ab g_ij³). Both maps are resized to the input bilinearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.fullgrad.aggregate import MapSize, resize_map
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo

# Ops after a convolution that still belong to "its" activation (the rectified feature maps
# Grad-CAM is defined on), followed while they are the only consumer.
FOLLOWED_OPS = frozenset({"BatchNormalization", "Relu", "LeakyRelu", "Clip"})
PLUS_EPSILON = 1e-7


def find_cam_layer(info: GraphInfo, path: Sequence[onnx.NodeProto], chosen: str | None) -> str:
    """The activation the CAM weighs: ``chosen``, or the last rank-4 Conv output on the
    gradient path, after a BatchNormalization/ReLU that directly follows it."""
    on_path = {o for node in path for o in node.output}
    if chosen is not None:
        if chosen not in on_path:
            raise UnsupportedModelError(
                f"--cam-layer {chosen!r} is not a tensor between the input and the explained "
                f"output; e.g. {_examples(info, path)}"
            )
        if info.rank(chosen) != 4:
            raise UnsupportedModelError(
                f"--cam-layer {chosen!r} has rank {info.rank(chosen)}; Grad-CAM needs an NCHW "
                "activation of rank 4"
            )
        return chosen
    convs = [n.output[0] for n in path if n.op_type == "Conv" and info.rank(n.output[0]) == 4]
    if not convs:
        raise UnsupportedModelError(
            "no rank-4 Conv output between the input and the explained output; choose the "
            "Grad-CAM layer with --cam-layer"
        )
    return _follow(info, convs[-1], on_path)


def _follow(info: GraphInfo, tensor: str, on_path: set[str]) -> str:
    while True:
        consumers = info.consumers.get(tensor, [])
        if len(consumers) != 1 or consumers[0].op_type not in FOLLOWED_OPS:
            return tensor
        nxt = consumers[0].output[0]
        if nxt not in on_path or info.rank(nxt) != 4 or tensor in info.graph_outputs:
            return tensor
        tensor = nxt


def _examples(info: GraphInfo, path: Sequence[onnx.NodeProto]) -> str:
    rank4 = [n.output[0] for n in path if info.rank(n.output[0]) == 4]
    return ", ".join(repr(name) for name in rank4[-3:]) or "(no rank-4 tensor)"


def cam_map(b: GraphBuilder, activation: str, gradient: str, plus: bool, batch: str,
            size: MapSize, elem: int) -> str:
    """[N, H, W] Grad-CAM (``plus``: Grad-CAM++) map of an NCHW activation and its gradient."""
    weights = _plus_weights(b, activation, gradient, elem) if plus else b.reduce(
        "ReduceMean", gradient, [2, 3], keepdims=1)
    cam = b.Relu(b.reduce("ReduceSum", b.Mul(weights, activation), [1], keepdims=0))
    shape = b.info.shape(activation) or ()
    if tuple(shape[2:]) == (size if isinstance(size, tuple) else size.dims):
        return cam
    return resize_map(b, cam, batch, size)


def _plus_weights(b: GraphBuilder, activation: str, gradient: str, elem: int) -> str:
    squared = b.Mul(gradient, gradient)
    cubed = b.Mul(squared, gradient)
    total = b.reduce("ReduceSum", activation, [2, 3], keepdims=1)
    denominator = b.Add(b.Add(b.Mul(squared, b.scalar(2.0, elem)), b.Mul(total, cubed)),
                        b.scalar(PLUS_EPSILON, elem))
    # a_ij is 0 where g_ij is 0 (the numerator is), as in the reference implementation
    alpha = b.Div(squared, denominator)
    return b.reduce("ReduceSum", b.Mul(alpha, b.Relu(gradient)), [2, 3], keepdims=1)
