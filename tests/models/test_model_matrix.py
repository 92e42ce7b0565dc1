"""The model matrix (tools/make_model_matrix.py): real exports augmented and checked against
the framework's own gradient. Fast tier by default; full-size models with ``-m slow``."""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import matrix_checks
import numpy as np
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
        for spec in specs for exporter in module.EXPORTERS
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
    families = {s.family for s in module.FAST}
    assert families == {s.family for s in module.SLOW}
    assert len(families) == 9  # ResNet-18 and -50 are one family
    assert set(module.EXPORTERS) == {"torchscript", "dynamo"}


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
