"""Reverse-mode differentiation of ONNX graphs into standard ai.onnx ops."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from fg_onnx.errors import FgOnnxError
from fg_onnx.grad.backprop import Backward, build_backward
from fg_onnx.grad.registry import REGISTRY, VJPContext, no_gradient, vjp
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.graph.normalize import normalize

SEED_INPUT = "grad_seed"
GRAD_PREFIX = "grad_"

__all__ = [
    "GRAD_PREFIX",
    "REGISTRY",
    "SEED_INPUT",
    "Backward",
    "VJPContext",
    "build_backward",
    "gradient_model",
    "no_gradient",
    "vjp",
]


def gradient_model(
    source: ModelSource,
    output: str | None = None,
    wrt: Sequence[str] | None = None,
    provider: str = "any",
) -> onnx.ModelProto:
    """Returns the model extended with the gradient of one output.

    The new model has an extra input ``grad_seed`` (the cotangent of ``output``, same shape and
    type) and one extra output ``grad_<name>`` per tensor in ``wrt`` holding the vector-Jacobian
    product. Original inputs and outputs are unchanged.

    Args:
        source: a model path or ModelProto.
        output: the differentiated output (default: the first graph output).
        wrt: graph inputs or intermediate tensors (default: every float graph input).
        provider: "any" (default) or "cpu": where the model will run (see
            ``fg_onnx.grad.registry.VJPContext.provider``).
    """
    model = normalize(load_model(source))
    info = GraphInfo(model)
    output = output or info.graph_outputs[0]
    if output not in info.graph_outputs:
        raise FgOnnxError(f"no graph output named {output!r}; outputs: {info.graph_outputs}")
    wanted = list(wrt) if wrt is not None else [n for n in info.graph_inputs if info.is_float(n)]
    builder = GraphBuilder(info)
    seed = builder.reserve(SEED_INPUT)
    backward = build_backward(info, builder, {output: seed}, wanted, provider=provider)
    out_value = next(v for v in model.graph.output if v.name == output)
    model.graph.input.append(helper.make_value_info(seed, out_value.type))
    for name in wanted:
        grad = backward.grads[name]
        if grad is None:
            raise FgOnnxError(f"{name!r} does not influence output {output!r}")
        public = builder.reserve(GRAD_PREFIX + name)
        builder.op_multi("Identity", grad, outputs=[public])
        shape = info.shape(name)
        model.graph.output.append(
            helper.make_tensor_value_info(public, info.elem_type(name), shape)
        )
    builder.apply_to(model)
    return model
