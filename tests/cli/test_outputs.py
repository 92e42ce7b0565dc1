"""What explain leaves behind: maps at the size asked for, no empty folder after a failure."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fg_onnx.cli.main import main
from fg_onnx.errors import FgOnnxError
from fg_onnx.methods import Explainer
from fg_onnx.runtime.session import Explanation

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def test_maps_at_the_models_or_the_images_size(tmp_path: Path) -> None:
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), cv2.imread(str(IMAGES / "circle.png"))[16:112])
    height, width = 96, 128
    for size, expected in (("model", (64, 64)), ("image", (height, width))):
        out = tmp_path / size
        assert main(["explain", str(SAMPLE), str(image), "-o", str(out), "--device", "cpu",
                     "--map-size", size]) == 0
        row = json.loads((out / "summary.json").read_text())[0]
        saliency = np.load(out / row["map"])
        assert saliency.shape == expected and saliency.dtype == np.float32
    small = np.load(tmp_path / "model" / row["map"])
    large = np.load(tmp_path / "image" / row["map"])
    resized = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(large, resized, rtol=1e-6)


def test_an_out_of_range_target_leaves_no_folder(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(out), "--target", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("fg-onnx: error: --target 9 is out of range: the model has 4 classes "
                   "(0..3)")
    assert not (tmp_path / "new").exists()


def test_a_run_that_fails_midway_removes_only_the_folder_it_made_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise FgOnnxError("onnxruntime failed while explaining a batch: boom")

    monkeypatch.setattr(Explainer, "explain", fail)
    out = tmp_path / "made" / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(out), "--device", "cpu"]) == 2
    assert not (tmp_path / "made").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(mine), "--device", "cpu"]) == 2
    assert (mine / "notes.txt").read_text() == "kept"


def _without_completeness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Methods without a completeness check (Grad-CAM, gradients, ...) report None."""
    explain = Explainer.explain

    def explain_without(self: Explainer, *args: object, **kwargs: object) -> Explanation:
        return dataclasses.replace(explain(self, *args, **kwargs),  # type: ignore[arg-type]
                                   completeness_error=None)

    monkeypatch.setattr(Explainer, "explain", explain_without)


def test_a_method_without_completeness_has_null_and_empty_cells(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_completeness(monkeypatch)
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES / "circle.png"), "-o", str(out),
                 "--method", "grad-cam", "--device", "cpu"]) == 0
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["completeness_error"] is None and row["finite"] is True
    with (out / "summary.csv").open() as stream:
        assert next(csv.DictReader(stream))["completeness_error"] == ""
    assert "<td data-key=\"\"></td>" in (out / "report.html").read_text()
