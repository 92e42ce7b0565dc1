"""Which axis of a tensor is the batch of the model's input: a CTC head may put time first
([T, N, C], a seq-first LSTM), and seeds and samples are read along that axis.

Evidence, in order: the input's symbolic batch dim named at exactly one axis; shape
inference at the concrete TRIAL_BATCHES, where exactly one axis takes each trial's value;
for a fixed input batch B, exactly one axis fixed at B while every other one is fixed at
another size or follows the input's width (shape inference at TRIAL_WIDTHS: a CTC head's
time axis, which a batch of 1 cannot tell from the batch by its size).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from fg_onnx.graph.info import GraphInfo, Shape
from fg_onnx.graph.normalize import TRIAL_BATCHES, known_dims, trial_types
from fg_onnx.graph.save import without_weights

TRIAL_WIDTHS = (160, 224)
"""Concrete input widths shape inference runs at to find the axes that follow the width."""

Trials = list[dict[str, onnx.ValueInfoProto]] | None


def batch_axes(model: onnx.ModelProto, info: GraphInfo, input_name: str,
               tensors: Sequence[str], width_axis: int) -> dict[str, int | None]:
    """Each tensor's batch axis, or None where the graph does not say (``model`` is the
    normalised model ``info`` reads; ``width_axis`` the input's; shape inference at trial
    sizes runs only where the shapes alone do not tell)."""
    input_shape = info.shape(input_name) or (None,)
    batch = input_shape[0]
    found = {name: _by_value(info.shape(name), batch, set()) for name in tensors}
    undecided = [name for name, axis in found.items() if axis is None]
    if not undecided:
        return found
    weightless = without_weights(model)
    if isinstance(batch, int):
        if len(input_shape) > width_axis and isinstance(input_shape[width_axis], int):
            return found  # no trial width: the shapes are all there is
        trials = trial_types(weightless, TRIAL_WIDTHS, width_axis, (input_name,))
        for name in undecided:
            found[name] = _by_value(info.shape(name), batch, _varying(trials, name))
    else:
        trials = trial_types(weightless)
        for name in undecided:
            found[name] = _by_trials(_dims_of(trials, name))
    return found


def _by_value(shape: Shape | None, batch: object, varying: set[int]) -> int | None:
    """The one axis the input's batch dim names: the same symbol, or a fixed size B that no
    other axis could also have (every other one fixed at another size, or in ``varying``:
    following the input's width)."""
    if shape is None:
        return None
    if isinstance(batch, str):
        axes = [i for i, d in enumerate(shape) if d == batch]
        return axes[0] if len(axes) == 1 else None
    if isinstance(batch, int):
        axes = [i for i, d in enumerate(shape) if d == batch and i not in varying]
        settled = all(isinstance(d, int) or i in varying for i, d in enumerate(shape))
        return axes[0] if len(axes) == 1 and settled else None
    return None


def _dims_of(trials: Trials, name: str) -> list[list[int | None] | None] | None:
    if trials is None or any(name not in trial for trial in trials):
        return None
    return [known_dims(trial[name]) for trial in trials]


def _varying(trials: Trials, name: str) -> set[int]:
    """The axes of ``name`` whose size differs between the trials."""
    dims = _dims_of(trials, name)
    if dims is None or any(d is None for d in dims) or len({len(d or []) for d in dims}) != 1:
        return set()
    first = dims[0] or []
    return {i for i in range(len(first))
            if first[i] is not None and any(d is not None and d[i] != first[i] for d in dims)}


def _by_trials(trial_dims: list[list[int | None] | None] | None) -> int | None:
    """The one axis that is each trial's batch size in that trial."""
    if trial_dims is None or any(d is None for d in trial_dims):
        return None
    if len({len(d or []) for d in trial_dims}) != 1:
        return None
    rank = len(trial_dims[0] or [])
    axes = [i for i in range(rank)
            if all(d is not None and d[i] == b
                   for d, b in zip(trial_dims, TRIAL_BATCHES, strict=True))]
    return axes[0] if len(axes) == 1 else None
