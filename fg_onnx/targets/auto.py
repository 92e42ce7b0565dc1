"""Which task an output is for, read from its shape and the graph that makes it; the tensor
a detector's class scores are the Sigmoid of; class scores beside a boxes output."""

from __future__ import annotations

from collections.abc import Sequence

from fg_onnx.fullgrad.explained import choose_scores
from fg_onnx.graph.info import GraphInfo
from fg_onnx.targets.base import TASKS, TargetError, Task
from fg_onnx.targets.detection import PairGraph


def detect_task(sample_shape: Sequence[object] | None, producer: str | None,
                skipped_op: str | None, output: str) -> Task:
    """The task of an explained tensor of ``sample_shape`` (one sample's dims) made by op
    ``producer``: [C] classification, [] or [1] scalar, [C, H, W] segmentation, [T, C] after
    a (Log)Softmax sequence, a Concat's [4 + C, A] / [A, 5 + C] detection; else a one-line
    error naming the choices."""
    dims = list(sample_shape) if sample_shape is not None else None
    if dims is not None and all(d == 1 for d in dims):
        return "scalar"
    if dims is not None and (len(dims) == 1 or (len(dims) == 3 and dims[1:] == [1, 1])):
        return "classification"
    if dims is not None and len(dims) == 3:
        return "segmentation"
    if dims is not None and len(dims) == 2:
        if skipped_op in ("Softmax", "LogSoftmax"):
            return "sequence"
        if producer == "Concat":
            return "detection"
    shown = "unknown" if dims is None else f"[N, {', '.join(str(d) for d in dims)}]"
    raise TargetError(f"cannot tell the task of output {output!r} ({shown}): give --task "
                      f"{'|'.join(TASKS)}")


def sigmoid_logits(info: GraphInfo, output: str) -> str | None:
    """The logits a detector's class probabilities are the Sigmoid of, where ``output`` is a
    Concat whose last part is a Sigmoid (YOLOv8's [boxes, sigmoid(classes)]); else None."""
    producer = info.producer.get(output)
    if producer is None or producer.op_type != "Concat":
        return None
    last = info.producer.get(producer.input[-1])
    if last is None or last.op_type != "Sigmoid":
        return None
    return str(last.input[0])


def box_pair(info: GraphInfo, scores: str | None = None) -> tuple[str, str] | None:
    """(class scores, boxes): [N, A, K] ``scores`` (default: the first graph output of that
    rank that has one) beside a [N, A, 4] graph output of the same A (K is not 4); else
    None. DETR's logits and query boxes, an SSD's class scores and decoded boxes."""
    outputs = info.graph_outputs
    for candidate in [scores] if scores is not None else outputs:
        shape = info.shape(candidate)
        if shape is None or len(shape) != 3 or shape[2] == 4:
            continue
        for name in outputs:
            other = info.shape(name)
            if name != candidate and other is not None and len(other) == 3 \
                    and other[2] == 4 and other[1] == shape[1]:
                return candidate, name
    return None


def scores_pair(info: GraphInfo, explained: str) -> tuple[str, str] | None:
    """(class scores, boxes) for an ``explained`` tensor: the pair of the graph output a
    final Sigmoid/Softmax makes of it where there is one (--output named an SSD's logits:
    its probabilities are read from that output), else ``explained``'s own (box_pair)."""
    probabilities = _probabilities_of(info, explained)
    pair = box_pair(info, probabilities) if probabilities is not None else None
    return pair or box_pair(info, explained)


def _probabilities_of(info: GraphInfo, logits: str) -> str | None:
    """The float graph output whose logits, as choose_scores finds them back through
    order-keeping shape-only ops, are ``logits``; None where there is none."""
    for output in info.graph_outputs:
        if output != logits and info.is_float(output):
            _, scores, activation, _ = choose_scores(info, output, False)
            if scores == logits and activation is not None:
                return output
    return None


def pair_graph(info: GraphInfo, scores: str, boxes: str) -> PairGraph:
    """What the graph says of class scores beside boxes: the Sigmoid/Softmax that makes the
    scores (found back through shape-only ops, as the explained logits are), and the op that
    makes the boxes (a Sigmoid: fractions cx, cy, w, h, as DETR-family heads make them)."""
    activation = choose_scores(info, scores, False)[2]
    producer = info.producer.get(boxes)
    return PairGraph(boxes, activation, producer.op_type if producer is not None else None)
