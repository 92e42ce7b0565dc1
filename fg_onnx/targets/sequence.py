"""Sequence targets of a CTC recogniser ([T, C] logits per image, of a [N, T, C] output or
a time-first [T, N, C] one: the session reads samples and places seeds along the output's
batch axis, fg_onnx.graph.batch_axis): one target per character of the greedy decoding, or
one time step and class."""

from __future__ import annotations

import numpy as np

from fg_onnx.targets.base import Forward, Picked, Target, TargetError, TargetRequest


def greedy_decode(logits: np.ndarray, blank: int) -> list[tuple[int, int, int]]:
    """(class, first step, last step) per decoded character: the per-step arg-max with
    repeats merged and blanks removed."""
    best = logits.argmax(1)
    runs: list[tuple[int, int, int]] = []
    start = 0
    for t in range(1, len(best) + 1):
        if t == len(best) or best[t] != best[start]:
            if best[start] != blank:
                runs.append((int(best[start]), start, t - 1))
            start = t
    return runs


def _character(alphabet: list[str], cls: int, classes: int, blank: int) -> str:
    """The character of class ``cls``: the alphabet's entry (an alphabet of C entries lists
    the blank too; one of C - 1 lists only the others, in order), else ``[cls]``."""
    index = cls if len(alphabet) == classes else cls - (cls > blank)
    return alphabet[index] if alphabet and 0 <= index < len(alphabet) else f"[{cls}]"


def sequence_targets(forward: Forward, request: TargetRequest) -> Picked:
    """Σ of a decoded character's logits over its steps, per character; with
    ``request.time_step``, the logit of class ``request.target`` (default: that step's
    arg-max) at that step."""
    logits = forward.explained
    if logits.ndim != 2:
        raise TargetError(f"sequence explains [N, T, C] or [T, N, C] CTC outputs; this one "
                          f"is [N, {', '.join(map(str, logits.shape))}] per image")
    steps, classes = logits.shape
    if not 0 <= request.blank < classes:
        raise TargetError(f"blank {request.blank} is not a class (0..{classes - 1})")
    alphabet = list(request.alphabet)
    runs = greedy_decode(logits, request.blank)
    text = "".join(_character(alphabet, cls, classes, request.blank) for cls, _, _ in runs)
    if request.time_step is not None:
        if not 0 <= request.time_step < steps:
            raise TargetError(f"time step {request.time_step} is out of range (0..{steps - 1})")
        cls = request.target if request.target is not None else int(
            logits[request.time_step].argmax())
        if not 0 <= cls < classes:
            raise TargetError(f"class {cls} is out of range (0..{classes - 1})")
        seed = np.zeros(logits.shape, np.float32)
        seed[request.time_step, cls] = 1.0
        return Picked([Target(seed, {"target": cls, "text": text,
                                     "character": _character(alphabet, cls, classes,
                                                             request.blank),
                                     "steps": [request.time_step, request.time_step]})])
    if not runs:
        return Picked([], "the decoded text is empty (every step is the blank)")
    targets = []
    for position, (cls, first, last) in enumerate(runs):
        seed = np.zeros(logits.shape, np.float32)
        seed[first:last + 1, cls] = 1.0
        targets.append(Target(seed, {
            "target": cls, "text": text,
            "character": _character(alphabet, cls, classes, request.blank),
            "position": position, "steps": [first, last]}))
    return Picked(targets)
