"""Framework-neutral checks of the model matrix (see ``tools/make_model_matrix.py``).

A framework module supplies, per model, the exported ONNX file, deterministic inputs and a
reference (logits and input gradient by the framework's own autodiff); this module augments
the file and compares. A classifier is explained through ``fg_target`` (classes ``TARGETS``,
:func:`check_exported`); a model whose spec says ``seed`` through ``fg_grad_output`` (a fixed
random linear functional of its output, :func:`check_seeded`), at each of its input sizes.
"""

from __future__ import annotations

import datetime
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from float16_emulation import run_emulated

import fg_onnx
from fg_onnx.fullgrad import contract
from fg_onnx.fullgrad.augment import AugmentOptions

TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 1e-3
"""Relative to the size of the decomposition (see :func:`float16_completeness_error`):
float16 rounds each term to about 2.4e-4 of its size."""
INPUT_SEEDS = 3
TARGETS = np.array([3, 7], dtype=np.int64)
BATCH = len(TARGETS)
CLASSES = 10

OUTPUT_SEED = 11
"""The random generator's seed of the seeds (see :func:`output_seed`)."""

Reference = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""(input, targets) -> (model output, {precision: ∂ Σ_n logits[n, targets[n]] / ∂ input});
for a ``seed`` spec (input, seed) -> (model output, {precision: ∂ ⟨seed, output⟩ / ∂ input}):
the framework's gradient in float32 and, where the framework can, in float64."""
Inputs = Callable[[int], np.ndarray]
"""seed -> a deterministic float32 input batch."""
SizedInputs = Callable[[int, tuple[int, int]], np.ndarray]
"""(seed, (height, width)) -> a deterministic float32 input batch of that size."""
Explain = Callable[[np.ndarray], tuple[str, np.ndarray]]
"""The exported model's output -> (the augmented model's input that says what is explained,
its value)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the matrix."""

    name: str
    family: str
    build: Callable[[], object]
    size: int
    """Input height and width (0 where ``sizes`` says them)."""
    relu: bool
    """Positively homogeneous (ReLU/MaxPool) apart from explicit biases: completeness must
    hold without implicit biases."""
    tier: str
    """"fast" (CI) or "slow" (full-size, opt-in)."""
    task: str = "classification"
    sizes: tuple[tuple[int, int], ...] = ()
    """Input sizes (height, width) of a model exported with the dims that differ between
    them (and the batch) left open: augmented once, checked at each."""
    channels: int = 3
    seed: bool = False
    """Explains ⟨seed, output⟩ for a fixed random seed fed through ``fg_grad_output`` (the
    augment option ``seed_input``) instead of the classes ``TARGETS`` through ``fg_target``."""
    opset: int | None = None
    """The export's opset (None: the framework module's)."""
    not_exported: Mapping[str, str] = field(default_factory=dict)
    """Exporter -> why this model is not exported with it (the page lists them)."""
    no_float16: str = ""
    """Why float16 is not checked (empty: it is)."""
    float16_gradient_scale: tuple[float, str] | None = None
    """float16's ``gradient_scale`` where the default does not suit the model, and why."""

    @property
    def input_sizes(self) -> tuple[tuple[int, int], ...]:
        """Every (height, width) the model is checked at."""
        return self.sizes or ((self.size, self.size),)

    def exporters(self, available: Sequence[str]) -> list[str]:
        """The exporters of ``available`` this model is exported with."""
        return [name for name in available if name not in self.not_exported]


@dataclass
class MatrixResult:
    """What the checks found for one (model, exporter)."""

    model: str
    family: str
    exporter: str
    tier: str
    relu: bool
    task: str = "classification"
    sizes: str = ""
    """The input sizes checked, e.g. "64×64, 96×128"; the errors are the worst over them."""
    explained: str = "classes"
    """"classes" (``fg_target``) or "seed" (``fg_grad_output``)."""
    float16_skipped: str = ""
    """Why float16 is not checked (then it is no criterion)."""
    float16_note: str = ""
    """How float16 is checked where that differs from the default (e.g. its gradient scale)."""
    opset: int = 0
    nodes: int = 0
    output_error: float = float("nan")
    """Augmented model's original output vs onnxruntime on the exported model (relative)."""
    export_error: float = float("nan")
    """Exported model on onnxruntime vs the framework (relative); a sanity check of export."""
    grad_error: float = float("nan")
    grad_scale: float = float("nan")
    """max |reference gradient|: zero would make the gradient check vacuous."""
    reference_noise: float = 0.0
    """The framework's own float32 gradient against its float64 one, at the input compared
    (0 where it has no float64): how far two exact float32 gradients can disagree there."""
    completeness_plain: float = float("nan")
    completeness_implicit: float = float("nan")
    completeness_float16: float = float("nan")
    """With implicit biases, augmented with ``precision="float16"``, under float16 rounding
    (tools/float16_emulation.py); see :func:`float16_completeness_error`."""
    completeness_float16_score: float = float("nan")
    """The same error relative to the score, as ``fg-onnx explain`` reports it."""
    augment_seconds: float = float("nan")
    input_seeds: int = 0
    """Inputs tried until the gradient agreed (see :func:`check_exported`)."""
    gradient_match: str = ""
    """The reference precision and onnxruntime setting of ``grad_error``."""
    error: str = ""

    @property
    def failures(self) -> list[str]:
        """The criteria this model misses (empty: it passes)."""
        if self.error:
            return [self.error]
        checks = {
            "original output changed": self.output_error <= 1e-6,
            "export differs from the framework": self.export_error < TOLERANCE,
            "input gradient differs from the framework": self.gradient_agrees,
            "reference gradient is zero": self.grad_scale > 0.0,
            "incomplete with implicit biases": self.completeness_implicit < TOLERANCE,
            "incomplete in float16": self.completeness_float16 < FLOAT16_TOLERANCE,
        }
        if self.float16_skipped:
            del checks["incomplete in float16"]
        if self.relu:
            checks["incomplete without implicit biases"] = self.completeness_plain < TOLERANCE
        # NaN compares false, so a missing number counts as a failure.
        return [what for what, ok in checks.items() if not ok]

    @property
    def gradient_agrees(self) -> bool:
        """Within TOLERANCE of a reference, or no further from one than the framework's
        float32 and float64 gradients are from each other (see :func:`check_exported`)."""
        return self.grad_error < TOLERANCE or self.grad_error <= self.reference_noise

    @property
    def passed(self) -> bool:
        """Whether every criterion holds."""
        return not self.failures


DEFAULT_MATCH = "float32 reference, onnxruntime optimised"


def new_result(spec: ModelSpec, exporter: str) -> MatrixResult:
    """The empty result of ``spec`` exported with ``exporter``."""
    float16_note = ""
    if spec.float16_gradient_scale is not None:
        scale, why = spec.float16_gradient_scale
        float16_note = f"float16 with gradient_scale {scale:g}: {why}"
    return MatrixResult(
        spec.name, spec.family, exporter, spec.tier, spec.relu, task=spec.task,
        sizes=", ".join(f"{h}×{w}" for h, w in spec.input_sizes),
        explained="seed" if spec.seed else "classes", float16_skipped=spec.no_float16,
        float16_note=float16_note)


def session(model: onnx.ModelProto | Path, optimise: bool = True) -> ort.InferenceSession:
    """A CPU session with onnxruntime's warnings silenced; ``optimise=False`` turns its graph
    optimisations (fusions, layout changes) off."""
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # exporters leave unused initializers; ORT warns per one
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``sess`` by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (inf when the shapes differ)."""
    if got.shape != want.shape:
        return float("inf")
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-12)
    return float(np.abs(got - want).max(initial=0.0)) / scale


def completeness_error(out: dict[str, np.ndarray], x: np.ndarray) -> float:
    """Worst |score - (Σ input·grad + bias total)| / max(|score|, 1e-3) over the batch."""
    # Random-weight exports can put a logit near zero: relative to at least 1e-3.
    scale = np.maximum(np.abs(out[contract.SCORE].astype(np.float64)), 1e-3)
    return float(contract.outputs_completeness_error(out, x, scale).max())


def _class_targets(output: np.ndarray) -> tuple[str, np.ndarray]:
    return contract.TARGET, TARGETS


def check_exported(path: Path, reference: Reference, inputs: Inputs,
                   result: MatrixResult) -> MatrixResult:
    """Augments ``path`` (plain and with implicit biases) and fills in ``result``.

    The gradient is compared at up to ``INPUT_SEEDS`` inputs, stopping at the first that
    agrees: two float32 forward passes round differently, and a pre-activation within that
    rounding of a ReLU/ReLU6/MaxPool kink takes a different branch in each (a different,
    equally exact gradient). Full-size networks have millions of units, so at each input the
    gradient may also be compared with the framework's float64 gradient and with
    onnxruntime's graph optimisations off, which round differently again. Where even the
    framework's own float32 gradient differs from its float64 one by more than TOLERANCE
    (1e-2 to 7e-2 for the random full-size torchvision models at every input tried), a
    gradient no further from a reference than that agrees: a tighter bound is not a property
    of float32 there. A wrong rule fails at every input, in every setting, and completeness,
    which holds at onnxruntime's own branches, is checked without that allowance.
    """
    proto = _described(path, result)
    _check_gradients(proto, reference, inputs, result)
    # The gradient checks' sessions are gone by now: a full-size model's six sessions and the
    # float16 emulation's do not fit in memory together.
    gc.collect()
    options = AugmentOptions(implicit_biases=True, precision="float16", components=True)
    half = fg_onnx.augment_with_report(proto, options).model
    x = inputs(0)
    out = run_emulated(half, {proto.graph.input[0].name: x, contract.TARGET: TARGETS})
    result.completeness_float16 = float16_completeness_error(out, x)
    result.completeness_float16_score = completeness_error(out, x)
    return result


def _check_gradients(proto: onnx.ModelProto, reference: Reference, inputs: Inputs,
                     result: MatrixResult) -> None:
    # A function of its own: its sessions are released when it returns.
    _compare_until_agreeing(_augmented_sessions(proto, result), reference, inputs, result)


def _described(path: Path, result: MatrixResult) -> onnx.ModelProto:
    """The exported model, its opset and node count recorded in ``result``."""
    proto = onnx.load(str(path))
    result.opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    result.nodes = len(proto.graph.node)
    return proto


def _augmented_sessions(proto: onnx.ModelProto, result: MatrixResult,
                        seed_input: bool = False) -> _Sessions:
    """Sessions of the model augmented plain (timed into ``result``) and with implicit
    biases."""
    start = time.perf_counter()
    plain = fg_onnx.augment(proto, seed_input=seed_input)
    result.augment_seconds = time.perf_counter() - start
    implicit = fg_onnx.augment(proto, seed_input=seed_input, implicit_biases=True)
    return _Sessions(proto, (plain, implicit))


def _compare_until_agreeing(sessions: _Sessions, reference: Reference, inputs: Inputs,
                            result: MatrixResult, explain: Explain = _class_targets) -> None:
    """:func:`_compare` at up to INPUT_SEEDS inputs, stopping at the first whose gradient
    agrees (see :func:`check_exported`)."""
    for seed in range(INPUT_SEEDS):
        result.input_seeds = seed + 1
        _compare(sessions, reference, inputs(seed), result, explain=explain)
        if result.gradient_agrees:
            break


def check_seeded(path: Path, spec: ModelSpec, reference: Reference, inputs: SizedInputs,
                 result: MatrixResult) -> MatrixResult:
    """Augments ``path`` once with a seed input (plain, with implicit biases and, unless
    ``spec.no_float16``, in float16) and checks it at every size of ``spec.input_sizes``,
    each as :func:`check_exported` checks a classifier; ``result`` holds the worst errors.

    What is explained is ⟨seed, output⟩ with :func:`output_seed`'s seed of the output's shape
    at that size, so the one augmented model must serve every size.
    """
    proto = _described(path, result)
    sessions = _augmented_sessions(proto, result, seed_input=True)
    half = None
    if not spec.no_float16:
        options = AugmentOptions(implicit_biases=True, precision="float16", components=True,
                                 seed_input=True, gradient_scale=_float16_scale(spec))
        half = fg_onnx.augment_with_report(proto, options).model
    per_size = []
    for size in spec.input_sizes:
        at_size = replace(result)
        _check_size(sessions, half, reference, _at(inputs, size), at_size)
        per_size.append(at_size)
    return _worst(result, per_size)


def _at(inputs: SizedInputs, size: tuple[int, int]) -> Inputs:
    return lambda seed: inputs(seed, size)


def _float16_scale(spec: ModelSpec) -> float | None:
    return None if spec.float16_gradient_scale is None else spec.float16_gradient_scale[0]


def _check_size(sessions: _Sessions, half: onnx.ModelProto | None, reference: Reference,
                inputs: Inputs, result: MatrixResult) -> None:
    """:func:`check_seeded` at one input size (``inputs`` makes batches of it)."""
    _compare_until_agreeing(sessions, reference, inputs, result, explain=_output_seed)
    if half is None:
        return
    x = inputs(0)
    image = sessions.original.get_inputs()[0].name
    output = run(sessions.original, {image: x})[sessions.original.get_outputs()[0].name]
    out = run_emulated(half, {image: x, contract.GRAD_OUTPUT: output_seed(output.shape)})
    result.completeness_float16 = float16_completeness_error(out, x)
    result.completeness_float16_score = completeness_error(out, x)


_WORST_OF_SIZES = ("output_error", "export_error", "grad_error", "completeness_plain",
                   "completeness_implicit", "completeness_float16",
                   "completeness_float16_score")


def _worst(result: MatrixResult, per_size: Sequence[MatrixResult]) -> MatrixResult:
    """``result`` with the worst of ``per_size``'s measurements (NaN: one is missing)."""
    for name in _WORST_OF_SIZES:
        values = [getattr(r, name) for r in per_size]
        setattr(result, name, float("nan") if np.isnan(values).any() else max(values))
    result.grad_scale = min(r.grad_scale for r in per_size)
    result.input_seeds = max(r.input_seeds for r in per_size)
    matches = sorted({r.gradient_match for r in per_size} - {DEFAULT_MATCH})
    result.gradient_match = "; ".join(matches) or DEFAULT_MATCH
    return result


class _Sessions:
    """The exported model's session and the augmented models' (plain, implicit) sessions,
    optimised; unoptimised ones are made when first asked for."""

    def __init__(self, original: onnx.ModelProto,
                 augmented: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
        self.original = session(original)
        self.augmented = augmented
        self.optimised = tuple(session(model) for model in augmented)
        self._unoptimised: tuple[ort.InferenceSession, ...] = ()

    def unoptimised(self) -> tuple[ort.InferenceSession, ...]:
        if not self._unoptimised:
            self._unoptimised = tuple(session(m, optimise=False) for m in self.augmented)
        return self._unoptimised


def float16_completeness_error(out: dict[str, np.ndarray], x: np.ndarray) -> float:
    """Worst |score − (Σ input·grad + bias total)| over the batch, relative to the size of
    the decomposition: Σ |input·grad| + Σ over the component taps of |their total| (or
    |score| when larger). Its terms can cancel into a much smaller score (1000:1 in the
    random full-size ResNet-50), and float16 rounds each of them, not their sum."""
    n = len(x)
    size = np.abs(out[contract.INPUT_GRAD].astype(np.float64) * x).reshape(n, -1).sum(1)
    for name, value in out.items():
        if name.startswith(contract.TAP_PREFIX):
            size += np.abs(value.astype(np.float64).reshape(n, -1).sum(1))
    score = np.abs(out[contract.SCORE].astype(np.float64))
    scale = np.maximum(np.maximum(score, size), 1e-3)
    return float(contract.outputs_completeness_error(out, x, scale).max())


def output_seed(shape: Sequence[int]) -> np.ndarray:
    """The seed of a ``seed`` spec's output of ``shape``: standard normal, fixed per shape."""
    return np.random.default_rng(OUTPUT_SEED).standard_normal(tuple(shape)).astype(np.float32)


def _output_seed(output: np.ndarray) -> tuple[str, np.ndarray]:
    return contract.GRAD_OUTPUT, output_seed(output.shape)


def _compare(sessions: _Sessions, reference: Reference, x: np.ndarray,
             result: MatrixResult, explain: Explain = _class_targets) -> None:
    image = sessions.original.get_inputs()[0].name
    output = sessions.original.get_outputs()[0].name
    original = run(sessions.original, {image: x})[output]
    explained_input, explained = explain(original)
    expected_output, expected_grads = reference(x, explained)
    result.export_error = relative_error(original, expected_output)
    feeds = {image: x, explained_input: explained}
    out_plain, out_implicit = (run(s, feeds) for s in sessions.optimised)
    result.output_error = max(relative_error(out[output], original)
                              for out in (out_plain, out_implicit))
    result.grad_scale = float(np.abs(expected_grads["float32"]).max())
    if "float64" in expected_grads:
        result.reference_noise = relative_error(expected_grads["float32"],
                                                expected_grads["float64"])
    result.completeness_plain = completeness_error(out_plain, x)
    result.completeness_implicit = completeness_error(out_implicit, x)
    grads = [out[contract.INPUT_GRAD] for out in (out_plain, out_implicit)]
    result.grad_error, result.gradient_match = _gradient_error(grads, expected_grads, "optimised")
    if not result.gradient_agrees:
        grads = [run(s, feeds)[contract.INPUT_GRAD] for s in sessions.unoptimised()]
        result.grad_error, result.gradient_match = min(
            (result.grad_error, result.gradient_match),
            _gradient_error(grads, expected_grads, "unoptimised"))


def _gradient_error(grads: Sequence[np.ndarray], references: dict[str, np.ndarray],
                    setting: str) -> tuple[float, str]:
    """The smallest over the reference precisions of the largest error over ``grads``, and
    what it was measured against."""
    return min(
        (max(relative_error(grad, want) for grad in grads),
         f"{precision} reference, onnxruntime {setting}")
        for precision, want in references.items()
    )


def _match_note(result: MatrixResult) -> list[str]:
    notes = []
    if result.gradient_match not in ("", DEFAULT_MATCH):
        notes.append(f"gradient agreed with the {result.gradient_match}")
    if result.grad_error >= TOLERANCE:
        notes.append(f"the framework's float32 gradient is {number(result.reference_noise)} "
                     "from its float64 one there")
    return notes


def number(value: float) -> str:
    """A table cell for a measured error ("-" when missing)."""
    return "-" if np.isnan(value) else f"{value:.1e}"


def markdown_table(results: Sequence[MatrixResult], command: str, versions: str,
                   not_exported: Sequence[tuple[str, str, str]] = ()) -> str:
    """The documentation page for ``results``; ``not_exported``: (model, exporter, why) of
    the models an exporter does not export."""
    today = datetime.date.today().isoformat()
    passed = sum(r.passed for r in results)
    lines = [
        "# Model matrix",
        "",
        f"<!-- Generated by `{command}` on {today}; do not edit. -->",
        "",
        f"Generated on {today} with {versions}, onnx {onnx.__version__}, onnxruntime "
        f"{ort.__version__} (CPU provider). **{passed} of {len(results)} pass.**",
        "",
        *_criteria(),
        "",
        "| Model | Family | Task | Tier | Exporter | Opset | Nodes | Input sizes | Explained | "
        "ReLU | Passes | Gradient error | Inputs | Completeness plain | "
        "Completeness implicit | Completeness float16 | Augment s | Notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in results),
    ]
    if not_exported:
        lines += ["", "Not exported:", "",
                  *(f"- {model} with the {exporter} exporter: {why}"
                    for model, exporter, why in not_exported)]
    return "\n".join(lines) + "\n"


def _criteria() -> list[str]:
    """The page's paragraphs on what the columns mean."""
    return [
        "Each model has deterministic random weights (non-trivial BatchNorm statistics), batch "
        f"{BATCH} and a dynamic batch dimension. Classifiers have {CLASSES} classes and are "
        f"explained through `fg_target` (classes {', '.join(map(str, TARGETS))}; *Explained*: "
        "classes); the detector, segmenters and CRNNs through `fg_grad_output` "
        "(`seed_input`; *Explained*: seed): a fixed random linear functional ⟨seed, output⟩ "
        "of their whole output (standard normal, shaped like the output at that input size), "
        "the reference being torch autograd's ∂⟨seed, output⟩/∂input. Those are exported "
        "with the input dims that differ between their *input sizes* open, augmented once "
        "and checked at each size; a row shows the worst over its sizes. *Gradient*: "
        "max |fg_input_grad − reference| / max |reference|, the reference being the "
        "framework's own autodiff (torch autograd, TF GradientTape) in float32. "
        "*Completeness*: max over the batch of |score − (Σ input·grad + bias total)| / "
        "|score|, without (*plain*) and with `--implicit-biases`. *float16*: with both "
        "`--implicit-biases` and `--precision float16`, under float16 rounding (emulated on "
        "the CPU by tools/float16_emulation.py), relative to the size of the decomposition "
        "(Σ |input·grad| + Σ |tap totals|; float16 rounds each term, and the terms can cancel "
        "into a much smaller score), then relative to the score. Criteria: gradient and "
        f"completeness with implicit biases below {TOLERANCE:g}; plain completeness too for "
        f"ReLU networks (✓ in the ReLU column); float16 completeness below "
        f"{FLOAT16_TOLERANCE:g} where it is checked (the notes say why not); the original "
        "output unchanged (1e-6). "
        "*Inputs*: how many input batches were tried until the gradient agreed (at most "
        f"{INPUT_SEEDS}): two float32 forward passes round differently, and a pre-activation "
        "within rounding of a ReLU/MaxPool kink takes a different branch in each; at each "
        "input the gradient may also be compared with torch's float64 gradient and with "
        "onnxruntime's graph optimisations off (the notes say when that agreed); where "
        f"torch's own float32 gradient differs from its float64 one by more than {TOLERANCE:g} "
        "(full-size random networks, at every input tried), a gradient agrees when it is no "
        "further from a reference than that (the notes give the number). *Fast* "
        "models run in CI (`tests/models/test_model_matrix.py`); *slow* ones with "
        "`pytest -m slow`.",
    ]


def _row(r: MatrixResult) -> str:
    """One model's line of the table."""
    notes = r.failures or _match_note(r)
    if r.float16_skipped:
        notes = [*notes, f"float16 not checked: {r.float16_skipped}"]
    if r.float16_note:
        notes = [*notes, r.float16_note]
    seconds = "-" if np.isnan(r.augment_seconds) else f"{r.augment_seconds:.2f}"
    text = "; ".join(notes).replace("|", "\\|")
    return (
        f"| {r.model} | {r.family} | {r.task} | {r.tier} | {r.exporter} | {r.opset or '-'} | "
        f"{r.nodes or '-'} | {r.sizes or '-'} | {r.explained} | {'✓' if r.relu else ''} | "
        f"{'yes' if r.passed else '**no**'} | {number(r.grad_error)} | "
        f"{r.input_seeds or '-'} | {number(r.completeness_plain)} | "
        f"{number(r.completeness_implicit)} | "
        f"{number(r.completeness_float16)}, {number(r.completeness_float16_score)} | "
        f"{seconds} | {text} |"
    )
