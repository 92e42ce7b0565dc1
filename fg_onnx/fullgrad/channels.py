"""Which axis of each tensor holds the channels, followed from the explained input.

A map term sums ψ over a layer's channels. A bias that varies along one axis does not say
which axis that is (a constant added per row varies along H), and a tap without a bias vector
says nothing at all; in an NHWC region (between an exporter's Transposes) the channels are
last. The layout is therefore followed through the graph: from the input's layout, through
Transposes, to every tensor whose layout an op keeps.
"""

from __future__ import annotations

import onnx

from fg_onnx.graph.info import GraphInfo, node_attributes

CHANNELS_FIRST_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
    "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization",
    "GroupNormalization", "LRN", "DepthToSpace", "SpaceToDepth", "MaxUnpool",
})
"""Their outputs have channels on axis 1 by definition."""
LAYOUT_CHANGING_OPS = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "MatMul", "Gemm", "Einsum", "Transpose",
})
"""Their outputs' axes are not their inputs' (Transpose is followed separately)."""


def channel_axes(info: GraphInfo, image: str, axis: int) -> dict[str, int]:
    """The channel axis of every tensor it can be followed to from ``image``, whose
    channels are on ``axis``."""
    axes = {image: axis}
    for node in info.graph.node:  # topologically sorted
        found = _output_axis(node, info, axes)
        if found is None:
            continue
        for name in node.output:
            if name and info.rank(name) == info.rank(node.output[0]):
                axes[name] = found
    return axes


def _output_axis(node: onnx.NodeProto, info: GraphInfo, axes: dict[str, int]) -> int | None:
    op = node.op_type
    inputs = [name for name in node.input if name]
    output = node.output[0]
    if op in CHANNELS_FIRST_OPS:
        return 1
    if op == "Transpose":
        return _transposed(node, info, axes)
    if op == "MatMul" and info.is_const(node.input[1]) and info.rank(node.input[1]) == 2:
        # A Linear layer: only the last axis changes size, every axis keeps its meaning.
        return axes.get(node.input[0]) if info.rank(output) == info.rank(node.input[0]) \
            else None
    if op in LAYOUT_CHANGING_OPS:
        return None
    rank = info.rank(output)
    for name in inputs:
        if name in axes and rank is not None and info.rank(name) == rank:
            return axes[name]
    return None


def _transposed(node: onnx.NodeProto, info: GraphInfo, axes: dict[str, int]) -> int | None:
    source = node.input[0]
    if source not in axes:
        return None
    rank = info.rank(source)
    perm = node_attributes(node).get("perm")
    if perm is None:
        perm = list(reversed(range(rank))) if rank is not None else []
    return perm.index(axes[source]) if axes[source] in perm else None
