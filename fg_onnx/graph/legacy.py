"""Where the opset upgrade and ONNX shape inference disagree with what onnxruntime runs.

The gradient must explain the network the user runs, and the user runs it on onnxruntime.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.info import GraphInfo, node_label, opset_of

LEGACY_RESIZE_OPSET = 11
"""Upsample and Resize before opset 11 map output to input coordinates as x / scale."""


def legacy_resize_attributes(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """For a model older than opset 11, the Resize attributes that keep each Upsample/Resize
    computing what onnxruntime computes for it, keyed by the node's output.

    onnx's version converter makes them opset-11 Resizes with the default half-pixel
    coordinates, which moves every linearly interpolated pixel. onnxruntime runs the old ops
    with asymmetric coordinates, rounding nearest neighbours down when enlarging and up when
    shrinking.
    """
    if opset_of(model) >= LEGACY_RESIZE_OPSET:
        return {}
    info = GraphInfo(model)
    found = {}
    for node in model.graph.node:
        if node.op_type in ("Upsample", "Resize") and node.domain in ("", "ai.onnx"):
            found[node.output[0]] = _resize_attributes(node, info)
    return found


def _resize_attributes(node: onnx.NodeProto, info: GraphInfo) -> dict[str, str]:
    attrs: dict[str, Any] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("mode", b"nearest").decode()
    restored = {"coordinate_transformation_mode": "asymmetric"}
    if mode == "nearest":
        restored["nearest_mode"] = _nearest_rounding(node, attrs, info)
    return restored


def _nearest_rounding(node: onnx.NodeProto, attrs: dict[str, Any],
                      info: GraphInfo) -> str:
    scales = attrs.get("scales")  # Upsample before opset 9
    if scales is None and len(node.input) > 1:
        scales = info.const(node.input[1])
    if scales is None:
        if node.op_type == "Upsample":
            return "floor"  # its scales are >= 1 by definition
        raise UnsupportedModelError(
            f"{node_label(node)} (opset 10, nearest) has computed scales: onnxruntime rounds "
            "down where it enlarges and up where it shrinks, which a newer Resize cannot "
            "express without the scales; re-export the model at opset 11 or later"
        )
    resized = [float(s) for s in np.asarray(scales).ravel() if float(s) != 1.0]
    if all(s > 1.0 for s in resized):
        return "floor"
    if all(s < 1.0 for s in resized):
        return "ceil"
    raise UnsupportedModelError(
        f"{node_label(node)} (opset < 11, nearest) enlarges some axes and shrinks others "
        f"(scales {[float(s) for s in np.asarray(scales).ravel()]}): onnxruntime rounds each "
        "axis its own way, which one newer Resize cannot express; re-export the model at "
        "opset 11 or later"
    )


def restore_resize_attributes(model: onnx.ModelProto,
                              attributes: dict[str, dict[str, str]]) -> None:
    """Sets the attributes from :func:`legacy_resize_attributes` on the upgraded Resizes."""
    for node in model.graph.node:
        wanted = attributes.get(node.output[0]) if node.op_type == "Resize" else None
        if not wanted:
            continue
        kept = [a for a in node.attribute if a.name not in wanted]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in wanted.items())


POOLS = ("MaxPool", "AveragePool", "LpPool")
CEIL_MODE_FIXED_OPSET = 22
"""From opset 22 ONNX drops a ceil_mode window that starts in the end padding, as
onnxruntime always did."""


def reject_runtime_shape_disagreements(model: onnx.ModelProto) -> None:
    """Refuses nodes whose output size onnxruntime computes differently from ONNX shape
    inference: the gradient is built on the inferred sizes and would fail when it runs."""
    info = GraphInfo(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        problem = _shape_disagreement(node, info, opset_of(model))
        if problem:
            raise UnsupportedModelError(f"{node_label(node)}: {problem}")


def _shape_disagreement(node: onnx.NodeProto, info: GraphInfo, opset: int) -> str | None:
    attrs: dict[str, Any] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET").decode()
    same = auto_pad.startswith("SAME")
    if node.op_type == "ConvTranspose" and same and any(attrs.get("output_padding", [])) \
            and not attrs.get("output_shape"):
        return ("auto_pad SAME with output_padding: onnxruntime ignores output_padding, ONNX "
                "shape inference adds it; give output_shape or explicit pads instead")
    if node.op_type not in POOLS:
        return None
    if same and any(int(d) != 1 for d in attrs.get("dilations", [])):
        return ("auto_pad SAME with dilations: onnxruntime and ONNX shape inference give "
                "different output sizes; give explicit pads instead")
    if attrs.get("ceil_mode") and opset < CEIL_MODE_FIXED_OPSET and not same:
        return _ceil_mode_disagreement(node, attrs, info)
    return None


def _ceil_mode_disagreement(node: onnx.NodeProto, attrs: dict[str, Any],
                            info: GraphInfo) -> str | None:
    shape = info.shape(node.input[0])
    kernel = [int(k) for k in attrs["kernel_shape"]]
    spatial = len(kernel)
    if shape is None or len(shape) != spatial + 2:
        return None
    strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * spatial)]
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * spatial)]
    for axis, size in enumerate(shape[2:]):
        if not isinstance(size, int):
            continue
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        padded = size + pads[axis] + pads[axis + spatial]
        count = math.ceil((padded - extent) / strides[axis]) + 1
        if (count - 1) * strides[axis] >= size + pads[axis]:
            return (f"with ceil_mode its last window along axis {axis + 2} starts in the end "
                    f"padding; onnxruntime drops it ({count - 1} outputs), ONNX shape "
                    f"inference before opset {CEIL_MODE_FIXED_OPSET} keeps it ({count}); "
                    f"export at opset {CEIL_MODE_FIXED_OPSET} or with smaller padding")
    return None
