"""What a targets run explains in a model: the task, the output the task reads, the tensor to
explain where the options name none, and what the graph says of a detector's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from fg_onnx.choices import spatial_axes
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.fullgrad.contract import is_augmented, read_facts
from fg_onnx.fullgrad.explained import Explained, explained_batch_axis, resolve
from fg_onnx.graph.batch_axis import batch_axes
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import normalize
from fg_onnx.targets.auto import (
    box_pair,
    detect_task,
    pair_graph,
    scores_pair,
    sigmoid_logits,
)
from fg_onnx.targets.base import TASKS, TargetError, Task
from fg_onnx.targets.detection import PairGraph


@dataclass(frozen=True)
class Plan:
    """A model's targets run."""

    task: Task
    raw: str
    """The output the task reads: a YOLO detector's raw output (the named output where it
    is a graph output, else the model's first), class scores beside boxes (the Softmax's or
    Sigmoid's output where the explained tensor is its logits), a segmenter's probabilities;
    else the explained output."""
    output: str | None = None
    """The tensor to explain where the options name none (a detector's class scores beside
    its boxes, the logits its Sigmoid reads); None: the options' own."""
    pair: PairGraph = field(default_factory=PairGraph)


@dataclass(frozen=True)
class _Model:
    """What is explained in a model, as resolve or an augmented model's facts say."""

    info: GraphInfo
    explained: Explained
    batch_axis: int | None
    """The explained tensor's; None where the graph does not say."""
    raw: str
    augmented: bool


def plan(proto: onnx.ModelProto, task: str, options: AugmentOptions) -> Plan:
    """The plan of a targets run of ``task`` (auto: from the output's shape and graph)."""
    model = (_augmented(proto, options.sequence_layout) if is_augmented(proto)
             else _original(proto, task, options))
    chosen = _task(model, task)
    ex = model.explained
    if chosen == "sequence" and model.batch_axis is None:
        shape = model.info.shape(ex.scores)
        shown = "unknown" if shape is None else str(list(shape))
        raise TargetError(f"cannot tell whether output {ex.scores!r} ({shown}) is [N, T, C] "
                          "or [T, N, C]: give --sequence-layout ntc|tnc")
    if chosen != "detection":
        return Plan(chosen, ex.output)
    pair = scores_pair(model.info, ex.output)
    if pair is not None:
        named = None if options.output is not None or model.augmented else ex.output
        return Plan(chosen, pair[0], named, pair_graph(model.info, *pair))
    logits = (sigmoid_logits(model.info, model.raw)
              if options.output is None and not model.augmented else None)
    return Plan(chosen, model.raw, logits)


def _augmented(proto: onnx.ModelProto, sequence_layout: str) -> _Model:
    facts = read_facts(proto)
    if not facts.seed_input:
        raise TargetError("targets need the original model or one augmented with "
                          "--seed-input")
    explained = Explained(facts.input, facts.output, facts.scores, facts.skipped_op,
                          facts.layout)
    info = GraphInfo(proto)
    axis = _augmented_batch_axis(info, explained, facts.batch_axes.get(facts.scores),
                                 sequence_layout)
    # Outputs an augmented model adds come after the original ones: its first output is the
    # original's (a detector's boxes and scores when --output named the logits).
    return _Model(info, explained, axis, proto.graph.output[0].name, True)


def _augmented_batch_axis(info: GraphInfo, explained: Explained, recorded: int | None,
                          sequence_layout: str) -> int | None:
    """The explained tensor's batch axis in an augmented model: the one its metadata records,
    which ``sequence_layout`` must not contradict. Where none is recorded the graph reads the
    batch at axis 0, which is all a layout may say, and a rank-3 tensor's is unknown (None:
    the graph did not say when it was augmented) unless the layout says it."""
    if recorded is not None:
        return explained_batch_axis(info, explained, sequence_layout, recorded)
    if sequence_layout == "auto":
        return None if info.rank(explained.scores) == 3 else 0
    wanted = explained_batch_axis(info, explained, sequence_layout, None)
    if wanted != 0:
        raise TargetError(f"--sequence-layout {sequence_layout} does not fit the augmented "
                          f"model: it reads {explained.scores!r} with the batch at axis 0; "
                          f"augment it again with --seed-input --sequence-layout "
                          f"{sequence_layout}")
    return wanted


def _original(proto: onnx.ModelProto, task: str, options: AugmentOptions) -> _Model:
    normalised = normalize(proto)
    info = GraphInfo(normalised)
    output = options.output
    if output is None and task in ("auto", "detection"):
        pair = box_pair(info)  # class scores beside boxes: explain the scores
        output = pair[0] if pair is not None else None
    ex = resolve(info, options.input, output, options.explain_probabilities, options.layout,
                 True)
    found: int | None = 0  # only a sequence's [T, N, C] puts its batch elsewhere
    if options.sequence_layout != "auto" or info.rank(ex.scores) == 3:
        found = batch_axes(normalised, info, ex.input, [ex.scores],
                           spatial_axes(ex.layout)[1])[ex.scores]
    axis = explained_batch_axis(info, ex, options.sequence_layout, found)
    raw = ex.output if ex.output in info.graph_outputs else info.graph_outputs[0]
    return _Model(info, ex, axis, raw, False)


def _task(model: _Model, task: str) -> Task:
    """``task``, or the task the explained output's shape and graph say."""
    if task != "auto":
        if task not in TASKS:
            raise TargetError(f"unknown task {task!r}: choose auto, {', '.join(TASKS)}")
        return task
    ex, info = model.explained, model.info
    if scores_pair(info, ex.output) is not None:
        return "detection"  # class scores beside a boxes output: DETR, SSD
    try:
        return _task_of(info, ex.output, ex.scores, ex.skipped_op, model.batch_axis or 0)
    except TargetError:
        if model.raw == ex.output or not _is_detector(info, model.raw):
            raise
        return "detection"  # --output named a detector's logits: its first output tells


def _is_detector(info: GraphInfo, output: str) -> bool:
    try:
        return _task_of(info, output, output, None, 0) == "detection"
    except TargetError:
        return False


def _task_of(info: GraphInfo, output: str, scores: str, skipped: str | None,
             batch_axis: int) -> Task:
    shape = info.shape(scores)
    sample = None if shape is None else [d for i, d in enumerate(shape) if i != batch_axis]
    producer = info.producer.get(output)
    return detect_task(sample, producer.op_type if producer else None, skipped, scores)
