"""float16 arithmetic on a CPU, for the tests and the benchmark's completeness column.

onnxruntime's CPU provider runs a float16 graph in float32 between Casts at its ends, so it
hides float16 rounding, underflow and overflow. The emulation computes every node in
float32 and rounds each output that the model keeps in float16 through a float16 Cast, as a
GPU stores it; sessions run with graph optimisations off so that the rounding stays.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import infer_shapes

HALF, FLOAT = TensorProto.FLOAT16, TensorProto.FLOAT


def emulate_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of a float16 ``model`` that rounds like it."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    info = GraphInfo(infer_shapes(copy))
    graph = copy.graph
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attribute.t)
            elif attribute.name in ("to", "dtype") and attribute.i == HALF:
                attribute.i = FLOAT
        rounding = []
        for i, name in enumerate(node.output):
            if name and info.elem_type(name) == HALF:
                node.output[i] = f"{name}/exact"
                rounding += [
                    helper.make_node("Cast", [f"{name}/exact"], [f"{name}/half"], to=HALF),
                    helper.make_node("Cast", [f"{name}/half"], [name], to=FLOAT),
                ]
        nodes += [node, *rounding]
    del graph.node[:]
    graph.node.extend(nodes)
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == HALF:
            value.type.tensor_type.elem_type = FLOAT
    return copy


def _widen_tensor(tensor: onnx.TensorProto) -> None:
    if tensor.data_type == HALF:
        wide = numpy_helper.to_array(tensor).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(wide, tensor.name))


def run_emulated(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of float16 ``model`` under the emulation."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(emulate_float16(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
