"""Choosing what is explained: the image input, the score tensor (logits) and the layout."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

from fg_onnx.choices import (
    LAYOUT_CHOICES,
    SEQUENCE_LAYOUTS,
    Layout,
    LayoutChoice,
    sequence_batch_axis,
)
from fg_onnx.errors import UnsupportedModelError
from fg_onnx.graph.info import DEFAULT_DOMAINS, GraphInfo, node_attributes

PROBABILITY_OPS = ("Softmax", "LogSoftmax", "Sigmoid")
SHAPE_ONLY_OPS = ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
                  "Transpose")
"""Ops that only reshape, followed back from the output to a probability op (the opset
upgrade wraps an opset-11 Softmax in Flatten and Reshape)."""


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
    skipped_through: tuple[str, ...] = ()
    """The shape-only ops between the output and ``skipped_op``, from the output back."""


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


def choose_scores(info: GraphInfo, output: str | None, explain_probabilities: bool,
                  ) -> tuple[str, str, str | None, tuple[str, ...]]:
    """``(output, scores, skipped_op, skipped_through)``: the explained tensor (a graph output,
    by default the first, or any float tensor of the graph) and the tensor whose entries are
    explained: the logits before a final Softmax/LogSoftmax/Sigmoid, found back through
    shape-only ops that keep each sample's element order, unless told otherwise."""
    output = _explained_output(info, output)
    if explain_probabilities:
        return output, output, None, ()
    tensor, through = output, []
    node = info.producer.get(tensor)
    while (node is not None and node.op_type in SHAPE_ONLY_OPS
           and node.domain in DEFAULT_DOMAINS and _keeps_sample_order(info, node)):
        through.append(node.op_type)
        tensor = node.input[0]
        node = info.producer.get(tensor)
    if node is not None and node.op_type in PROBABILITY_OPS and node.domain in DEFAULT_DOMAINS:
        return output, node.input[0], node.op_type, tuple(through)
    return output, output, None, ()


def _explained_output(info: GraphInfo, output: str | None) -> str:
    outputs = info.graph_outputs
    if output is None:
        output = outputs[0]
    elif output not in outputs and output not in info.producer:
        raise UnsupportedModelError(
            f"no tensor named {output!r} in the graph; outputs: {', '.join(outputs)} (or name "
            "any tensor a node computes)"
        )
    if not info.is_float(output):
        raise UnsupportedModelError(f"tensor {output!r} is not floating point; cannot explain "
                                    "it")
    return output


def _keeps_sample_order(info: GraphInfo, node: onnx.NodeProto) -> bool:
    """Whether ``node`` keeps the batch first and every sample's elements in order (a
    Transpose does only when it moves size-1 axes alone)."""
    if node.op_type != "Transpose":
        return True
    shape = info.shape(node.input[0])
    perm = node_attributes(node).get("perm")
    if shape is None or perm is None:
        return False
    moved = [axis for axis in perm if shape[axis] != 1]
    return perm[0] == 0 and moved == sorted(moved)


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
    chosen_output, scores, skipped, through = choose_scores(info, output,
                                                            explain_probabilities)
    if not seed_input:
        _check_classes_shape(info, scores)
    return Explained(chosen_input, chosen_output, scores, skipped,
                     detect_layout(info, chosen_input, layout), through)


def _check_classes_shape(info: GraphInfo, scores: str) -> None:
    """Scores are [batch, classes], with any trailing size-1 axes ([N, C, 1, 1] from a
    final 1x1 convolution)."""
    shape = info.shape(scores)
    if shape is None or len(shape) == 2:
        return
    if len(shape) > 2 and all(d == 1 for d in shape[2:]):
        return
    raise UnsupportedModelError(
        f"explained tensor {scores!r} has shape {list(shape)}, expected [batch, classes] "
        "(trailing size-1 axes allowed); use --seed-input to explain any linear functional "
        "of it"
    )


def explained_batch_axis(info: GraphInfo, explained: Explained, sequence_layout: str,
                         found: int | None) -> int | None:
    """The explained tensor's batch axis: ``sequence_layout``'s (ntc: 0, tnc: 1), which the
    graph's evidence ``found`` (fg_onnx.graph.batch_axis) must not contradict, or ``found``
    itself for "auto" (None where the graph does not say)."""
    if sequence_layout not in SEQUENCE_LAYOUTS:
        raise UnsupportedModelError(f"unknown sequence layout {sequence_layout!r}; use "
                                    f"{', '.join(SEQUENCE_LAYOUTS)}")
    if sequence_layout == "auto":
        return found
    scores = explained.scores
    shape = info.shape(scores)
    shown = "unknown" if shape is None else str(list(shape))
    if shape is not None and len(shape) != 3:
        raise UnsupportedModelError(f"--sequence-layout is for [N, T, C] or [T, N, C] "
                                    f"outputs; {scores!r} is {shown}")
    wanted = sequence_batch_axis(sequence_layout)
    if found is not None and found != wanted:
        named = {0: ", so it is ntc", 1: ", so it is tnc"}.get(found, "")
        raise UnsupportedModelError(
            f"--sequence-layout {sequence_layout} contradicts the graph: {scores!r} {shown} "
            f"has the input's batch at axis {found}{named}")
    return wanted
