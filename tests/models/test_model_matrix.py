"""The model matrix (tools/make_model_matrix.py): real exports augmented and checked against
the framework's own gradient. Fast tier by default; full-size models with ``-m slow``.
Classifiers are explained through classes, detectors, segmenters and CRNNs through a seed at
two input sizes."""

from __future__ import annotations

import functools
import importlib
import types
from pathlib import Path

import matrix_checks
import numpy as np
import onnx
import pytest
from matrix_checks import FLOAT16_TOLERANCE, TOLERANCE, MatrixResult, ModelSpec


def _framework(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _cases(module_name: str, tier: str) -> list[object]:
    """(spec, exporter) params of a framework module's tier; one skipped param when the
    framework is not installed."""
    module = _framework(module_name)
    if module is None:
        reason = f"{module_name} needs a framework that is not installed"
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=reason), id="missing")]
    specs: list[ModelSpec] = module.FAST if tier == "fast" else module.SLOW
    marks = [pytest.mark.slow] if tier == "slow" else []
    return [
        pytest.param(module, (spec, exporter), marks=marks, id=f"{spec.name}-{exporter}")
        for spec in specs for exporter in spec.exporters(module.EXPORTERS)
    ]


def _assert_passes(result: MatrixResult) -> None:
    assert not result.error, result.error
    assert result.output_error <= 1e-6, "original output changed"
    assert result.export_error < TOLERANCE, "the export itself differs from the framework"
    assert result.grad_scale > 0.0, "zero reference gradient: the check would be vacuous"
    assert result.gradient_agrees, (
        f"input gradient error {result.grad_error:.3g} (the framework's own float32 error "
        f"{result.reference_noise:.3g})"
    )
    assert result.completeness_implicit < TOLERANCE, (
        f"completeness error with implicit biases {result.completeness_implicit:.3g}"
    )
    if result.relu:
        assert result.completeness_plain < TOLERANCE, (
            f"completeness error of a ReLU network {result.completeness_plain:.3g}"
        )
    if not result.float16_skipped:
        assert result.completeness_float16 < FLOAT16_TOLERANCE, (
            f"completeness error in float16 {result.completeness_float16:.3g}"
        )
    assert result.passed, result.failures


CASES = [
    *_cases("matrix_torch", "fast"), *_cases("matrix_keras", "fast"),
    *_cases("matrix_torch", "slow"), *_cases("matrix_keras", "slow"),
]


@pytest.mark.parametrize(("module", "case"), CASES)
def test_model_matrix(module: types.ModuleType, case: tuple[ModelSpec, str],
                      tmp_path: Path) -> None:
    spec, exporter = case
    _assert_passes(module.run_one(spec, exporter, tmp_path))


def test_fast_tier_covers_every_family_and_exporter() -> None:
    module = _framework("matrix_torch")
    if module is None:
        pytest.skip("torchvision is not installed")
    classifiers = {s.family for s in module.FAST if not s.seed}
    assert classifiers == {s.family for s in module.SLOW if not s.seed}
    assert len(classifiers) == 9  # ResNet-18 and -50 are one family
    assert {s.family for s in module.SLOW} <= {s.family for s in module.FAST}
    assert set(module.EXPORTERS) == {"torchscript", "dynamo"}


def test_fast_tier_has_every_task_with_open_sizes() -> None:
    """The production kinds of issue #16: each explained through a seed at two sizes, with
    both exporters or a reason why not."""
    module = _framework("matrix_torch")
    if module is None:
        pytest.skip("torchvision is not installed")
    seeded = [s for s in module.FAST if s.seed]
    assert {s.task.split()[0] for s in seeded} == {"detection", "segmentation", "sequence"}
    assert {s.family for s in seeded} == {"yolo", "lraspp", "deeplabv3", "crnn"}
    for spec in seeded:
        assert len(set(spec.input_sizes)) == 2, spec.name
        assert all(why for why in spec.not_exported.values()), spec.name
        assert spec.exporters(module.EXPORTERS), spec.name
    softmax = [s for s in module.FAST if s.opset == 11]
    assert len(softmax) == 1 and not softmax[0].seed


def test_float16_that_is_not_checked_is_no_criterion() -> None:
    measured = {"output_error": 0.0, "export_error": 0.0, "grad_error": 1e-6,
                "grad_scale": 1.0, "completeness_plain": 1.0, "completeness_implicit": 1e-6}
    assert MatrixResult("m", "f", "e", "fast", relu=False, float16_skipped="why",
                        **measured).passed
    assert MatrixResult("m", "f", "e", "fast", relu=False, **measured).failures == [
        "incomplete in float16"]


def test_worst_of_the_sizes_is_reported() -> None:
    def at_size(grad: float, scale: float, seeds: int, float16: float,
                match: str) -> MatrixResult:
        return MatrixResult("m", "f", "e", "fast", relu=False, output_error=0.0,
                            export_error=0.0, grad_error=grad, grad_scale=scale,
                            completeness_plain=1.0, completeness_implicit=1e-6,
                            completeness_float16=float16, input_seeds=seeds,
                            gradient_match=match)
    per_size = [at_size(1e-6, 0.5, 3, 1e-4, matrix_checks.DEFAULT_MATCH),
                at_size(3e-6, 2.0, 1, float("nan"), "float64 reference, onnxruntime optimised")]
    worst = matrix_checks._worst(MatrixResult("m", "f", "e", "fast", relu=False), per_size)
    assert (worst.grad_error, worst.grad_scale, worst.input_seeds) == (3e-6, 0.5, 3)
    assert np.isnan(worst.completeness_float16)  # one size unmeasured: missing, a failure
    assert worst.gradient_match == "float64 reference, onnxruntime optimised"
    assert worst.failures == ["incomplete in float16"]


def test_seed_is_fixed_per_shape_and_not_trivial() -> None:
    seed = matrix_checks.output_seed((2, 7, 320))
    np.testing.assert_array_equal(seed, matrix_checks.output_seed([2, 7, 320]))
    assert seed.dtype == np.float32 and seed.std() > 0.5


def test_failures_are_reported() -> None:
    good = MatrixResult("m", "f", "e", "fast", relu=True, output_error=0.0, export_error=0.0,
                        grad_error=1e-6, grad_scale=1.0, completeness_plain=1e-6,
                        completeness_implicit=1e-6, completeness_float16=1e-4)
    assert good.passed
    bad = MatrixResult("m", "f", "e", "fast", relu=True, output_error=0.0, export_error=0.0,
                       grad_error=1e-6, grad_scale=1.0, completeness_plain=0.5,
                       completeness_implicit=1e-6, completeness_float16=0.1)
    assert bad.failures == ["incomplete in float16", "incomplete without implicit biases"]
    assert not MatrixResult("m", "f", "e", "fast", relu=False).passed  # nothing measured


def test_gradient_may_differ_as_much_as_the_framework_itself() -> None:
    measured = dict(model="m", family="f", exporter="e", tier="slow", relu=True,
                    output_error=0.0, export_error=0.0, grad_scale=1.0,
                    completeness_plain=1e-6, completeness_implicit=1e-6,
                    completeness_float16=1e-4)
    within = MatrixResult(**measured, grad_error=0.012, reference_noise=0.042)
    assert within.passed
    assert "float32 gradient is 4.2e-02" in matrix_checks._match_note(within)[-1]
    beyond = MatrixResult(**measured, grad_error=0.05, reference_noise=0.042)
    assert beyond.failures == ["input gradient differs from the framework"]
    # Without a float64 reference (Keras), TOLERANCE alone.
    assert not MatrixResult(**measured, grad_error=2e-4).passed


def test_gradient_error_is_the_best_reference_and_says_which() -> None:
    want = np.array([1.0, -2.0, 4.0])
    grads = [want + np.array([0.0, 0.0, 0.4]), want + np.array([0.0, 0.04, 0.0])]
    references = {"float32": want + np.array([0.0, 0.0, 1.0]), "float64": want}
    error, match = matrix_checks._gradient_error(grads, references, "optimised")
    # Each reference is judged by its worst gradient: float32 differs from the second by
    # 1 / 5, float64 from the first by 0.4 / 4.
    assert match == "float64 reference, onnxruntime optimised"
    assert error == pytest.approx(0.1)


def test_seeded_check_serves_both_sizes_and_fails_a_wrong_reference(tmp_path: Path) -> None:
    """check_seeded on a small Conv + ReLU net whose width alone differs between the sizes:
    the export leaves the batch and the width open, and a reference gradient twice the
    true one fails the gradient criterion only."""
    module = _framework("matrix_torch")
    if module is None:
        pytest.skip("torchvision is not installed")
    import torch.nn as nn

    spec = ModelSpec("conv", "conv", lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1),
                                                           nn.ReLU()),
                     0, True, "fast", sizes=((8, 8), (8, 12)), seed=True,
                     no_float16="not needed here")
    model = module.build_model(spec)
    path = module.export(model, module.sample_input(spec), tmp_path / "conv.onnx",
                         "torchscript", module.open_axes(model, spec))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["N", 3, 8, "W"]
    right = module.float32_and_float64_reference(model, module.seed_reference)

    def doubled(x: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        output, grads = right(x, seed)
        return output, {precision: 2 * grad for precision, grad in grads.items()}

    inputs = functools.partial(module.sample_input, spec)
    good = matrix_checks.check_seeded(path, spec, right, inputs,
                                      matrix_checks.new_result(spec, "torchscript"))
    assert good.passed, good.failures
    assert (good.sizes, good.explained) == ("8×8, 8×12", "seed")
    bad = matrix_checks.check_seeded(path, spec, doubled, inputs,
                                     matrix_checks.new_result(spec, "torchscript"))
    assert bad.failures == ["input gradient differs from the framework"]
    assert bad.input_seeds == matrix_checks.INPUT_SEEDS  # every input was tried
