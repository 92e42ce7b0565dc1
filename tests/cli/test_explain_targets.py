"""``fg-onnx explain`` with targets: one row, overlay and map per target; boxes in the
image's pixels; a note row when an image has none; bad targets in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from target_models import BoxDetector, PixelSegmenter, exported

from fg_onnx.cli.main import main

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def _image(path: Path, size: tuple[int, int] = (64, 96)) -> Path:
    pixels = np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)
    return path


def test_top_k_writes_one_row_and_map_per_class(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES / "circle.png"), "-o", str(out),
                 "--top-k", "3", "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [row["rank"] for row in rows] == [0, 1, 2]
    assert rows[0]["target"] == rows[0]["predicted"] and rows[0]["target_label"] == "circle"
    for index, row in enumerate(rows):
        assert row["task"] == "classification" and row["finite"] is True
        assert row["overlay"] == f"circle_t{index}_fullgrad.png"
        assert np.load(out / row["map"]).shape == (64, 64)
        assert row["completeness_error"] < 1e-4
    with (out / "summary.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == 3


@pytest.mark.parametrize("kind", ["yolov8", "ssd"])
def test_detections_have_boxes_in_the_image_pixels(kind: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from target_models import exported_ssd

    # The SSD: class scores after a Softmax (class 0 the background), boxes as fractions.
    model = (exported(BoxDetector(), tmp_path / "det.onnx") if kind == "yolov8" else
             exported_ssd(tmp_path / "ssd.onnx", softmax=True, normalised=True))
    image = _image(tmp_path / "scene.png")  # 96 wide, 64 high: 3x and 2x the model's 32
    out = tmp_path / "out"
    assert main(["explain", str(model), str(image), "-o", str(out), "--threshold", "0",
                 "--top-k", "2", "--preset", "zero-one", "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 2 and {row["task"] for row in rows} == {"detection"}
    for row in rows:
        x0, y0, x1, y1 = row["box"]
        assert (x1 - x0, y1 - y0) == (24.0, 16.0)  # an 8x8 cell, scaled
        assert cv2.imread(str(out / row["overlay"])).shape == (64, 96, 3)
        assert row["completeness_error"] < 1e-5 and 0 < row["confidence"] < 1
        assert kind == "yolov8" or row["target"] != 0
    assert "explained 2 target(s) in 1 image(s) (detection)" in capsys.readouterr().out
    none = tmp_path / "none"
    named = [] if kind == "yolov8" else ["--detection-format", "ssd", "--box-format", "xyxy"]
    assert main(["explain", str(model), str(image), "-o", str(none), "--threshold", "1",
                 *named, "--device", "cpu"]) == 0
    (row,) = json.loads((none / "summary.json").read_text())
    assert row["note"] == "no detection above the threshold 1" and row["map"] is None


def test_a_segmentation_mask_is_outlined(tmp_path: Path) -> None:
    model = exported(PixelSegmenter(), tmp_path / "seg.onnx")
    image = _image(tmp_path / "scene.png", (32, 32))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    out = tmp_path / "out"
    assert main(["explain", str(model), str(image), "-o", str(out), "--mask",
                 str(tmp_path / "mask.png"), "--target", "1", "--device", "cpu"]) == 0
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["task"] == "segmentation" and row["pixels"] == 256
    assert row["box"] == [8.0, 8.0, 24.0, 24.0] and row["completeness_error"] < 1e-4
    overlay = cv2.imread(str(out / row["overlay"]))
    assert (overlay[8, 8:24] == 255).all()  # the outline, white


def test_bad_targets_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(IMAGES / "circle.png")
    assert main(["explain", str(SAMPLE), image, "-o", str(tmp_path / "a"), "--label",
                 "hexagon", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("fg-onnx: error: the model has no label 'hexagon' (labels: circle, "
                   "square, triangle, cross)")
    assert not (tmp_path / "a").exists()
    assert main(["explain", str(SAMPLE), image, "-o", str(tmp_path / "b"), "--top-k", "2",
                 "--method", "smoothgrad", "--device", "cpu"]) == 2
    assert "targets take the in-graph methods" in capsys.readouterr().err


def test_ctc_characters_and_an_embedding_similarity(tmp_path: Path) -> None:
    from target_models import ColumnCTC, Embedder

    ctc = exported(ColumnCTC(), tmp_path / "ctc.onnx", shape=(2, 3, 8, 24))
    line = _image(tmp_path / "line.png", (8, 24))
    (tmp_path / "alphabet.txt").write_text("a\nb\nc\nd\n")
    out = tmp_path / "ctc"
    assert main(["explain", str(ctc), str(line), "-o", str(out), "--alphabet",
                 str(tmp_path / "alphabet.txt"), "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert rows and {row["task"] for row in rows} == {"sequence"}
    assert "".join(row["character"] for row in rows) == rows[0]["text"]
    assert all(row["completeness_error"] < 1e-4 for row in rows)

    embedder = exported(Embedder(), tmp_path / "emb.onnx")
    first, second = _image(tmp_path / "a.png", (32, 32)), tmp_path / "b.png"
    cv2.imwrite(str(second), cv2.imread(str(first))[::-1])
    out = tmp_path / "emb"
    assert main(["explain", str(embedder), str(first), "-o", str(out), "--reference",
                 str(second), "--preset", "zero-one", "--device", "cpu"]) == 0
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["task"] == "embedding" and row["target"] == "cosine"
    assert -1 <= row["score"] <= 1 and row["completeness_error"] < 1e-5
    np.save(tmp_path / "short.npy", np.ones(3))
    assert main(["explain", str(embedder), str(first), "-o", str(tmp_path / "bad"),
                 "--reference", str(tmp_path / "short.npy"), "--device", "cpu"]) == 2


def test_time_first_ctc_characters_and_its_layout_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from target_models import exported_time_first_ctc

    ctc = exported_time_first_ctc(tmp_path / "tnc.onnx")
    line = _image(tmp_path / "line.png", (8, 16))
    (tmp_path / "alphabet.txt").write_text("a\nb\nc\nd\n")
    out = tmp_path / "ctc"
    assert main(["explain", str(ctc), str(line), "-o", str(out), "--alphabet",
                 str(tmp_path / "alphabet.txt"), "--size", "8x16", "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) > 1 and {row["task"] for row in rows} == {"sequence"}
    assert "".join(row["character"] for row in rows) == rows[0]["text"]
    assert all(row["completeness_error"] < 1e-4 for row in rows)
    assert np.load(out / rows[0]["map"]).shape == (8, 16)
    capsys.readouterr()
    assert main(["explain", str(ctc), str(line), "-o", str(tmp_path / "bad"), "--size", "8x16",
                 "--sequence-layout", "ntc", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sequence-layout ntc contradicts the graph" in err[0]
    assert not (tmp_path / "bad").exists()
