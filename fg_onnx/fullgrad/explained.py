"""Choosing what is explained: the image input, the score tensor (logits) and the layout."""

from __future__ import annotations

from dataclasses import dataclass

from onnx import TensorProto

from fg_onnx.choices import LAYOUT_CHOICES, Layout, LayoutChoice
from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, node_attributes

PROBABILITY_OPS = ("Softmax", "LogSoftmax", "Sigmoid")
PASS_THROUGH_OPS = ("Identity", "Dropout")


@dataclass(frozen=True)
class Explained:
    """The tensors an augmented model explains."""

    input: str
    """The explained graph input (the image)."""
    output: str
    """The graph output the user named (or the first one)."""
    scores: str
    """The tensor whose entries are explained: the output, or the logits before its Softmax."""
    skipped_op: str | None
    """The probability op (Softmax, ...) skipped to reach the logits, if any."""
    layout: Layout
    """Where the input's channels are."""


def choose_input(info: GraphInfo, name: str | None) -> str:
    """The explained input: ``name``, or the only float graph input."""
    floats = [n for n in info.graph_inputs if info.is_float(n)]
    if name is not None:
        if name not in info.graph_inputs:
            raise UnsupportedModelError(
                f"no graph input named {name!r}; inputs: {', '.join(info.graph_inputs)}"
            )
        if not info.is_float(name):
            raise UnsupportedModelError(f"input {name!r} is not floating point; cannot explain it")
        return _refuse_bfloat16(info, name)
    if not floats:
        raise UnsupportedModelError(
            "the model has no floating-point input to explain (integer-only inputs such as "
            "token ids have no gradient)"
        )
    if len(floats) > 1:
        raise UnsupportedModelError(
            f"the model has several float inputs ({', '.join(floats)}); choose one with --input"
        )
    return _refuse_bfloat16(info, floats[0])


def _refuse_bfloat16(info: GraphInfo, name: str) -> str:
    if info.elem_type(name) == TensorProto.BFLOAT16:
        raise UnsupportedModelError(
            f"input {name!r} is bfloat16, which is not supported: onnxruntime's CPU provider "
            "lacks bfloat16 kernels for most ops; convert the model to float16 or float32"
        )
    return name


def choose_scores(info: GraphInfo, output: str | None,
                  explain_probabilities: bool) -> tuple[str, str, str | None]:
    """``(output, scores, skipped_op)``: the explained output and the tensor whose entries
    are explained (logits before a final Softmax/LogSoftmax/Sigmoid unless told otherwise)."""
    outputs = info.graph_outputs
    if output is None:
        output = outputs[0]
    elif output not in outputs:
        raise UnsupportedModelError(
            f"no graph output named {output!r}; outputs: {', '.join(outputs)}"
        )
    if not info.is_float(output):
        raise UnsupportedModelError(f"output {output!r} is not floating point; cannot explain it")
    if explain_probabilities:
        return output, output, None
    tensor = output
    node = info.producer.get(tensor)
    while node is not None and node.op_type in PASS_THROUGH_OPS and node.domain in DEFAULT_DOMAINS:
        tensor = node.input[0]
        node = info.producer.get(tensor)
    if node is not None and node.op_type in PROBABILITY_OPS and node.domain in DEFAULT_DOMAINS:
        return output, node.input[0], node.op_type
    return output, output, None


def detect_layout(info: GraphInfo, name: str, requested: str = "auto") -> Layout:
    """The input's layout: as requested, or read off the graph.

    NHWC when the input feeds a Transpose with perm [0, 3, 1, 2] (what tf2onnx emits) or its
    last dim is 1 or 3 while dim 1 is not; NCHW when it feeds Conv directly or dim 1 is 1 or 3.
    A requested layout that the graph contradicts (the first two rules) is refused: its maps
    would sum over a spatial axis.
    """
    if requested not in LAYOUT_CHOICES:
        raise UnsupportedModelError(f"unknown layout {requested!r}; use auto, nchw or nhwc")
    chosen: LayoutChoice = requested
    shape = info.shape(name)
    if shape is None or len(shape) != 4:
        raise UnsupportedModelError(
            f"input {name!r} has shape {shape}; FullGrad maps need an image input of rank 4"
        )
    evidence = _layout_from_graph(info, name)
    if chosen != "auto":
        if evidence is not None and evidence[0] != chosen:
            raise UnsupportedModelError(
                f"--layout {chosen} contradicts the graph: input {name!r} feeds "
                f"{evidence[1]}, so it is {evidence[0].upper()}")
        return chosen
    if evidence is not None:
        return evidence[0]
    channels_first = shape[1] in (1, 3, 4)
    channels_last = shape[3] in (1, 3, 4)
    if channels_first != channels_last:
        return "nchw" if channels_first else "nhwc"
    raise UnsupportedModelError(
        f"cannot tell whether input {name!r} with shape {list(shape)} is NCHW or NHWC; "
        "pass --layout nchw or --layout nhwc"
    )


def _layout_from_graph(info: GraphInfo, name: str) -> tuple[Layout, str] | None:
    """The layout the input's first layout-defining consumer implies, and which it is; found
    through the elementwise ops in between (a Keras model rescales before its Transpose)."""
    pending, seen = [name], {name}
    while pending:
        tensor = pending.pop(0)
        for node in info.consumers.get(tensor, []):
            if node.op_type == "Transpose" and node_attributes(node).get("perm") == [0, 3, 1, 2]:
                return "nhwc", "a Transpose to NCHW"
            if node.op_type in ("Conv", "BatchNormalization", "MaxPool"):
                return "nchw", f"a {node.op_type}"
            if node.op_type in ELEMENTWISE_OPS and node.output[0] not in seen:
                seen.add(node.output[0])
                pending.append(node.output[0])
    return None


ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity", "Clip", "Relu"})
"""Ops between an input and its first layer that keep its layout (normalisation, scaling)."""


def resolve(info: GraphInfo, input_name: str | None, output: str | None,
            explain_probabilities: bool, layout: str, seed_input: bool = False) -> Explained:
    """All of the above at once."""
    chosen_input = choose_input(info, input_name)
    chosen_output, scores, skipped = choose_scores(info, output, explain_probabilities)
    rank = info.rank(scores)
    if not seed_input and rank is not None and rank != 2:
        raise UnsupportedModelError(
            f"explained tensor {scores!r} has rank {rank}, expected [batch, classes]; use "
            "--seed-input to explain any linear functional of it"
        )
    return Explained(chosen_input, chosen_output, scores, skipped,
                     detect_layout(info, chosen_input, layout))
