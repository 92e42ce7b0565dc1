"""The augmented model's contract: its added inputs and outputs, the facts it carries, and the
completeness check its outputs allow. Everything that reads or writes an augmented model
(the augment pass, sessions, the scorer, the Ray engine, tools and tests) uses these names.

inputs:  every original input; ``fg_target`` int64 [N] (class per sample, -1 = arg-max), or
         ``fg_grad_output`` shaped like the explained tensor with ``seed_input`` (its batch
         on the explained tensor's batch axis: ``AugmentFacts.batch_axes``, 0 if not named).
outputs: every original output; ``fg_score`` [N]; ``fg_target_used`` int64 [N] (not with
         ``seed_input``); ``fg_input_grad`` (shape of the input); ``fg_bias_total`` [N];
         ``fg_saliency`` [N, H, W]; with ``components``, ``fg_tap_<i>`` per map tap; with
         ``seed_input``, the explained tensor itself where it is not an output already.
types:   as the model's; with ``precision="float16"`` too (float32 in and out, float16
         inside; the gradient scale is divided out of every output).
metadata: ``fg_onnx.augment`` holds :class:`AugmentFacts` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from fg_onnx.choices import GRAPH_METHODS, LAYOUTS, PRECISIONS, GraphMethod, Layout, Precision
from fg_onnx.errors import FgOnnxError

TARGET = "fg_target"
GRAD_OUTPUT = "fg_grad_output"
SCORE = "fg_score"
TARGET_USED = "fg_target_used"
INPUT_GRAD = "fg_input_grad"
BIAS_TOTAL = "fg_bias_total"
SALIENCY = "fg_saliency"
TAP_PREFIX = "fg_tap_"
METADATA_KEY = "fg_onnx.augment"

COMPLETENESS_FLOOR = 1e-6
"""The smallest |score| a completeness error is relative to (a score of zero has none)."""


@dataclass(frozen=True)
class AugmentFacts:
    """What the augment pass did, as stored in the augmented model's metadata."""

    input: str
    output: str
    scores: str
    """The explained tensor: the output, or the logits before its Softmax."""
    skipped_op: str | None
    layout: Layout
    implicit_biases: bool = False
    seed_input: bool = False
    method: GraphMethod = "fullgrad"
    cam_layer: str | None = None
    precision: Precision = "float32"
    gradient_scale: float = 1.0
    taps: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    batch_axes: dict[str, int] = field(default_factory=dict)
    """seed_input: the outputs (and the explained tensor) whose batch is not axis 0, by name
    (a [T, N, C] CTC head: 1), and the explained tensor's 0 where the graph or
    --sequence-layout said it; seeds and samples are read along it (0 where not named)."""

    def to_json(self) -> str:
        """The metadata value."""
        return json.dumps(asdict(self))


def is_augmented(model: onnx.ModelProto) -> bool:
    """Whether fg-onnx augmented ``model``."""
    return any(p.key == METADATA_KEY for p in model.metadata_props)


def read_facts(model: onnx.ModelProto) -> AugmentFacts:
    """The facts an augmented model carries; a one-line error for any other model."""
    value = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if value is None:
        raise FgOnnxError("the model is not augmented by fg-onnx (no fg_onnx.augment metadata)")
    try:
        stored = json.loads(value)
        known = {name: stored[name] for name in AugmentFacts.__dataclass_fields__
                 if name in stored}
        facts = AugmentFacts(**known)
    except (json.JSONDecodeError, TypeError) as exc:
        raise FgOnnxError(f"the model's fg_onnx.augment metadata is damaged: {exc}") from None
    allowed = ((facts.layout, LAYOUTS), (facts.method, GRAPH_METHODS),
               (facts.precision, PRECISIONS))
    bad: object = next((value for value, choices in allowed if value not in choices), None)
    if not isinstance(facts.batch_axes, dict) or not all(
            isinstance(a, int) and a >= 0 for a in facts.batch_axes.values()):
        bad = facts.batch_axes
    if bad is not None:
        raise FgOnnxError(f"the model's fg_onnx.augment metadata is damaged: {bad!r} is "
                          "not a value fg-onnx writes")
    return facts


def write_facts(model: onnx.ModelProto, facts: AugmentFacts) -> None:
    """Stores ``facts`` in ``model`` (replacing earlier ones)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=facts.to_json())


def tap_output(index: int) -> str:
    """The output holding the ``index``-th map tap's bias-gradient tensor (``components``)."""
    return f"{TAP_PREFIX}{index}"


def completeness_error(input_grad: np.ndarray, inputs: np.ndarray, bias_total: np.ndarray,
                       score: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """[N] |Σ x·∇x + Σ bias·∇bias − score| / max(scale, COMPLETENESS_FLOOR), in float64.

    ``scale`` defaults to |score|; pass another size (e.g. that of the decomposition's terms,
    which float16 rounds one by one) to measure the error relative to it.
    """
    n = len(inputs)
    reconstructed = (np.asarray(input_grad, np.float64) * inputs).reshape(n, -1).sum(1)
    reconstructed += np.asarray(bias_total, np.float64).reshape(n)
    score64 = np.asarray(score, np.float64).reshape(n)
    size = np.abs(score64) if scale is None else np.asarray(scale, np.float64)
    return np.asarray(np.abs(reconstructed - score64) / np.maximum(size, COMPLETENESS_FLOOR))


def outputs_completeness_error(outputs: dict[str, np.ndarray], inputs: np.ndarray,
                               scale: np.ndarray | None = None) -> np.ndarray:
    """:func:`completeness_error` of an augmented model's fetched outputs."""
    return completeness_error(outputs[INPUT_GRAD], inputs, outputs[BIAS_TOTAL],
                              outputs[SCORE], scale)
