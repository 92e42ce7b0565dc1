"""Where the opset upgrade and ONNX shape inference disagree with what onnxruntime runs.

The gradient must explain the network the user runs, and the user runs it on onnxruntime.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, node_attributes, node_label, opset_of

LEGACY_RESIZE_OPSET = 11
"""Upsample and Resize before opset 11 map output to input coordinates as x / scale."""


def restore_legacy_resizes(original: onnx.ModelProto, converted: onnx.ModelProto) -> list[str]:
    """Gives the Resizes that onnx's version converter made of ``original``'s Upsample and
    Resize nodes older than opset 11 the coordinates onnxruntime uses for those (in place);
    returns the outputs of the nearest-neighbour ones, whose rounding
    :func:`set_legacy_nearest_rounding` sets once their scales are known.

    The converter makes them opset-11 Resizes with the default half-pixel coordinates, which
    moves every linearly interpolated pixel; onnxruntime runs the old ops with asymmetric
    coordinates, rounding nearest neighbours down where they enlarge and up where they
    shrink. The converter renames their outputs, so they are matched in graph order.
    """
    if opset_of(original) >= LEGACY_RESIZE_OPSET:
        return []
    old = [n for n in original.graph.node if n.op_type in ("Upsample", "Resize")
           and n.domain in DEFAULT_DOMAINS]
    new = [n for n in converted.graph.node if n.op_type == "Resize"
           and n.domain in DEFAULT_DOMAINS]
    if len(old) != len(new):
        raise UnsupportedModelError(
            f"upgrading the model's {len(old)} Upsample/Resize node(s) gave {len(new)} "
            "Resize nodes; re-export the model at opset 11 or later")
    nearest = []
    for before, after in zip(old, new, strict=True):
        _set_attribute(after, "coordinate_transformation_mode", "asymmetric")
        if node_attributes(before).get("mode", "nearest") == "nearest":
            nearest.append(after.output[0])
    return nearest


def set_legacy_nearest_rounding(model: onnx.ModelProto, outputs: list[str]) -> None:
    """Sets the rounding of the nearest-neighbour Resizes :func:`restore_legacy_resizes`
    listed, from their scales (constant once the model is folded), in place."""
    if not outputs:
        return
    info = GraphInfo(model)
    wanted = set(outputs)
    for node in model.graph.node:
        if node.op_type == "Resize" and node.output[0] in wanted:
            _set_attribute(node, "nearest_mode", _nearest_rounding(node, info))


def _nearest_rounding(node: onnx.NodeProto, info: GraphInfo) -> str:
    scales = _resize_scales(node, info)
    if scales is None:
        raise UnsupportedModelError(
            f"{node_label(node)} (opset < 11, nearest) has computed scales: onnxruntime "
            "rounds down where it enlarges and up where it shrinks, which a newer Resize "
            "cannot express without the scales; re-export the model at opset 11 or later"
        )
    values = [float(s) for s in np.asarray(scales).ravel()]
    resized = [s for s in values if s != 1.0]
    if all(s > 1.0 for s in resized):
        return "floor"
    if all(s < 1.0 for s in resized):
        return "ceil"
    raise UnsupportedModelError(
        f"{node_label(node)} (opset < 11, nearest) enlarges some axes and shrinks others "
        f"(scales {values}): onnxruntime rounds each axis its own way, which one newer "
        "Resize cannot express; re-export the model at opset 11 or later"
    )


def _resize_scales(node: onnx.NodeProto, info: GraphInfo) -> np.ndarray | None:
    """A Resize's scales: given, or its sizes over its static input shape."""
    inputs = [*node.input, "", "", ""]
    if inputs[2]:
        return info.const(inputs[2])
    sizes, shape = (info.const(inputs[3]) if inputs[3] else None), info.static_shape(inputs[0])
    if sizes is None or shape is None or sizes.size != len(shape):
        return None
    return np.asarray(sizes, np.float32) / np.asarray(shape, np.float32)


def _set_attribute(node: onnx.NodeProto, name: str, value: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])


def correct_resize_shapes(model: onnx.ModelProto) -> bool:
    """Rewrites Resizes by scales whose output size ONNX shape inference gets wrong to
    Resizes by sizes (in place); returns whether it rewrote any, after which every inferred
    shape is dropped, to be inferred again.

    onnxruntime truncates ``float32(size) * float32(scale)``, ONNX shape inference the
    product in double: TorchScript writes ``size=7`` on 12 pixels as the scale 0.58333331,
    7.0 in float32 and 6.99999976 in double, so the gradient was built for 6 columns. The
    sizes give onnxruntime the same scale back (it divides them in float32), so the forward
    pass does not change; where they would not, the model is refused. Graph outputs lose
    their declared shapes when a Resize is rewritten: inference gives them again.
    """
    info = GraphInfo(model)
    rewritten = False
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in DEFAULT_DOMAINS:
            continue
        sizes = _runtime_resize_sizes(node, info)
        if sizes is None:
            continue
        name = f"{node.output[0]}__sizes"
        model.graph.initializer.append(onnx.numpy_helper.from_array(sizes, name))
        inputs = [*node.input, "", ""][:2]
        del node.input[:]
        node.input.extend([inputs[0], inputs[1], "", name])
        rewritten = True
    if rewritten:
        del model.graph.value_info[:]
        for output in model.graph.output:  # a declared shape may hold the wrong size too
            output.type.tensor_type.ClearField("shape")
    return rewritten


def _runtime_resize_sizes(node: onnx.NodeProto, info: GraphInfo) -> np.ndarray | None:
    """The sizes a Resize by constant scales has on onnxruntime, when ONNX shape inference
    infers others."""
    inputs = [*node.input, "", "", ""]
    shape = info.static_shape(inputs[0])
    scales = info.const(inputs[2]) if inputs[2] and not inputs[3] else None
    if shape is None or scales is None or scales.size != len(shape):
        return None
    if "axes" in node_attributes(node):
        return None
    scales = np.asarray(scales, np.float32).ravel()
    runtime = np.array([int(np.float32(d) * s) for d, s in zip(shape, scales, strict=True)])
    inferred = np.floor(np.array(shape, np.float64) * scales.astype(np.float64))
    if np.array_equal(runtime, inferred):
        return None
    if not np.array_equal(runtime.astype(np.float32) / np.array(shape, np.float32), scales):
        raise UnsupportedModelError(
            f"{node_label(node)}: onnxruntime makes {runtime.tolist()} of scales "
            f"{scales.tolist()}, ONNX shape inference {inferred.astype(int).tolist()}; give "
            "the Resize sizes instead of scales")
    return runtime.astype(np.int64)


POOLS = ("MaxPool", "AveragePool", "LpPool")
CEIL_MODE_FIXED_OPSET = 22
"""From opset 22 ONNX drops a ceil_mode window that starts in the end padding, as
onnxruntime always did."""


def reject_runtime_shape_disagreements(model: onnx.ModelProto) -> None:
    """Refuses nodes whose output size onnxruntime computes differently from ONNX shape
    inference: the gradient is built on the inferred sizes and would fail when it runs."""
    info = GraphInfo(model)
    for node in model.graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            continue
        problem = _shape_disagreement(node, info, info.opset)
        if problem:
            raise UnsupportedModelError(f"{node_label(node)}: {problem}")


def _shape_disagreement(node: onnx.NodeProto, info: GraphInfo, opset: int) -> str | None:
    attrs = node_attributes(node)
    auto_pad = attrs.get("auto_pad", "NOTSET")
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
