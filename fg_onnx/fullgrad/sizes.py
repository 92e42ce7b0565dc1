"""Which symbolic spatial dims are provably equal, so that the map's terms of one resolution
share a Resize where sizes are known only at run time.

ONNX shape inference names each convolution's output dims afresh (``unk__7``) even where the
size cannot change. A convolution or pool at stride 1 whose pads add up to its kernel's reach
keeps every spatial size exactly, so its output dims are the input's; nothing else is merged
(an elementwise op's dims may differ by broadcasting a 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import helper

from fg_onnx.graph.info import DEFAULT_DOMAINS, Dim, GraphInfo

SIZE_KEEPING_WINDOWS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


def equal_size_dims(info: GraphInfo) -> dict[str, str]:
    """Each symbolic spatial dim name that is provably equal to an earlier one, mapped to the
    earliest such name (dims not listed stand for themselves)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while name in parent:
            name = parent[name]
        return name

    for node in info.graph.node:
        if node.op_type not in SIZE_KEEPING_WINDOWS or node.domain not in DEFAULT_DOMAINS:
            continue
        x, y = info.shape(node.input[0]), info.shape(node.output[0])
        kernel = _kernel(node, info)
        if (x is None or y is None or kernel is None or len(x) != len(kernel) + 2
                or len(y) != len(x)):
            continue
        if not _keeps_size(node, kernel):
            continue
        for before, after in zip(x[2:], y[2:], strict=True):
            if isinstance(before, str) and isinstance(after, str) and root(after) != root(before):
                parent[root(after)] = root(before)
    return {name: root(name) for name in parent}


def canonical(dims: tuple[Dim, Dim], equal: Mapping[str, str]) -> tuple[Dim, Dim]:
    """(h, w) with each symbolic name replaced by its representative in ``equal``."""
    height, width = (equal.get(d, d) if isinstance(d, str) else d for d in dims)
    return height, width


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kernel(node: onnx.NodeProto, info: GraphInfo) -> list[int] | None:
    given = _attrs(node).get("kernel_shape")
    if given:
        return [int(k) for k in given]  # type: ignore[attr-defined]
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    weights = info.shape(node.input[1])
    if weights is None or not all(isinstance(k, int) for k in weights[2:]):
        return None
    return [int(k) for k in weights[2:]]  # type: ignore[arg-type]


def _keeps_size(node: onnx.NodeProto, kernel: list[int]) -> bool:
    """Stride 1 and pads adding up to the kernel's reach: out = in + pads − reach = in."""
    attrs, spatial = _attrs(node), len(kernel)
    strides = attrs.get("strides") or [1] * spatial
    dilations = attrs.get("dilations") or [1] * spatial
    if any(int(s) != 1 for s in strides):  # type: ignore[attr-defined]
        return False
    reach = [(k - 1) * int(d) for k, d in zip(kernel, dilations, strict=True)]  # type: ignore[call-overload]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return True
    if auto_pad == "VALID":
        return not any(reach)
    pads = [int(p) for p in attrs.get("pads") or [0] * (2 * spatial)]  # type: ignore[attr-defined]
    return all(pads[i] + pads[spatial + i] == reach[i] for i in range(spatial))
