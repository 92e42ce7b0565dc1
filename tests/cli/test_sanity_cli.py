"""``fg-onnx sanity``, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from onnx import TensorProto, helper

from fg_onnx.cli.main import main

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def test_sanity_writes_tables_plots_and_report(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sanity"
    args = ["sanity", str(SAMPLE), str(IMAGES / "circle.png"), str(IMAGES / "cross.jpg"),
            "--methods", "fullgrad,gradient", "-o", str(out), "--device", "cpu"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "### Cascading randomisation" in captured.out
    assert "sanity [" in captured.err  # the progress line
    data = json.loads((out / "sanity.json").read_text())
    assert set(data["methods"]) == {"fullgrad", "gradient"}
    cascade = data["methods"]["fullgrad"]["cascading"]
    assert len(cascade) == len(data["layers"]) == 6
    assert {"spearman_abs", "spearman", "ssim"} <= set(cascade[0])
    for name in ("sanity.png", "sanity_grid.png"):
        assert cv2.imread(str(out / name)) is not None
    assert "sanity_grid.png" in (out / "report.html").read_text()
    assert main(args) == 2  # results exist: --force needed
    assert "--force" in capsys.readouterr().err


def test_a_model_without_weights_is_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
         helper.make_node("Flatten", ["p"], ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "plain.onnx"
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["sanity", str(path), str(IMAGES / "circle.png"), "--methods", "gradient",
                 "-o", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no layer with constant weights" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
