"""Classification and scalar targets: a class logit (by index, label or rank), one output
element, or the sum of an output."""

from __future__ import annotations

import numpy as np

from fg_onnx.targets.base import Forward, Picked, Target, TargetError, TargetRequest, label_of


def classification_targets(forward: Forward, request: TargetRequest) -> Picked:
    """The named class, or the ``top_k`` best ones (best first)."""
    shape = forward.explained.shape
    scores = forward.explained.reshape(-1)  # [C, 1, 1] of a final 1x1 conv counts as [C]
    chosen = request.class_index()
    if chosen is not None:
        if not 0 <= chosen < len(scores):
            raise TargetError(f"class {chosen} is out of range: the model has {len(scores)} "
                              f"classes (0..{len(scores) - 1})")
        classes = [chosen]
    else:
        classes = [int(c) for c in np.argsort(-scores, kind="stable")[:request.top_k]]
    predicted = int(scores.argmax())
    targets = []
    for rank, index in enumerate(classes):
        seed = np.zeros(len(scores), np.float32)
        seed[index] = 1.0
        targets.append(Target(seed.reshape(shape), {
            "target": index, "target_label": label_of(request.labels, index),
            "predicted": predicted, "predicted_label": label_of(request.labels, predicted),
            "rank": rank if chosen is None else None}))
    return Picked(targets)


def scalar_targets(forward: Forward, request: TargetRequest) -> Picked:
    """Output element ``target`` (a flat index into one sample), or the sum of the output."""
    shape = forward.explained.shape
    size = int(np.prod(shape))
    if request.target is None:
        return Picked([Target(np.ones(shape, np.float32), {"target": "sum"})])
    if not 0 <= request.target < size:
        raise TargetError(f"element {request.target} is out of range: the output has {size} "
                          f"per sample (0..{size - 1})")
    seed = np.zeros(size, np.float32)
    seed[request.target] = 1.0
    return Picked([Target(seed.reshape(shape), {"target": request.target})])
