"""Classification and scalar targets through the API: top-k in one batch, labels by name,
completeness per target."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from target_models import Regressor, exported

import fg_onnx
from fg_onnx.targets import TargetError, TargetRequest
from fg_onnx.targets.run import TargetExplainer

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = [ROOT / "sample_models" / "images" / name for name in ("circle.png", "cross.jpg")]


@pytest.fixture(scope="module")
def explainer() -> TargetExplainer:
    return TargetExplainer(SAMPLE, device="cpu")


def test_top_k_explains_the_k_best_classes_as_fullgrad_does_one_by_one(
        explainer: TargetExplainer) -> None:
    assert explainer.task == "classification"
    batch = fg_onnx.load_batch(IMAGES, explainer.session)
    found = explainer.explain(batch, TargetRequest(top_k=3))
    fullgrad = fg_onnx.FullGrad(SAMPLE, device="cpu")
    for image, result in enumerate(found):
        classes = [int(r.fields["target"]) for r in result.results]
        logits = fullgrad.explain(batch[image:image + 1]).predicted
        assert classes[0] == int(logits[0])
        for r in result.results:
            one = fullgrad.explain(batch[image:image + 1], int(r.fields["target"]))
            np.testing.assert_allclose(r.score, one.scores[0], rtol=1e-5)
            np.testing.assert_allclose(r.saliency, one.saliency[0], rtol=1e-4, atol=1e-6)
            assert r.completeness_error is not None and r.completeness_error < 1e-5
        assert len(set(classes)) == 3


def test_a_label_names_its_class_and_an_unknown_one_is_refused(
        explainer: TargetExplainer) -> None:
    batch = fg_onnx.load_batch(IMAGES[:1], explainer.session)
    found = explainer.explain(batch, TargetRequest(label="triangle"))
    assert found[0].results[0].fields["target"] == explainer.labels.index("triangle") == 2
    assert found[0].results[0].fields["target_label"] == "triangle"
    with pytest.raises(TargetError, match="the model has no label 'hexagon' \\(labels: "
                                          "circle, square, triangle, cross\\)"):
        explainer.explain(batch, TargetRequest(label="hexagon"))
    with pytest.raises(TargetError, match="class 7 is out of range"):
        explainer.explain(batch, TargetRequest(target=7))


def test_a_scalar_output_is_explained_whole_with_completeness(tmp_path: Path) -> None:
    path = exported(Regressor(), tmp_path / "regressor.onnx")
    explainer = TargetExplainer(path, device="cpu")
    assert explainer.task == "scalar"
    batch = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    found = explainer.explain(batch)
    output = explainer.session.forward(batch)[explainer.explained]
    for image, result in enumerate(found):
        (r,) = result.results
        np.testing.assert_allclose(r.score, output[image].sum(), rtol=1e-5)
        assert r.completeness_error is not None and r.completeness_error < 1e-5
    with pytest.raises(TargetError, match="element 1 is out of range"):
        explainer.explain(batch, TargetRequest(target=1))


def test_the_readme_targets_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```py\n(.*?)```", text, re.S) if "TargetExplainer" in b]
    printed = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(printed):
            exec(compile(block, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    lines = printed.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["circle", "square"]
