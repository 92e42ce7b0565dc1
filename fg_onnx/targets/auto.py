"""Which task an output is for, read from its shape and the graph that makes it, and the
tensor a detector's class scores are the Sigmoid of."""

from __future__ import annotations

from collections.abc import Sequence

from fg_onnx.graph.info import GraphInfo
from fg_onnx.targets.base import TASKS, TargetError, Task


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
