"""``fg-onnx explain`` end to end on the shipped sample."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers import grayscale_model, with_symbolic_dims

from fg_onnx.cli.main import main
from fg_onnx.runtime.session import FullGrad
from fg_onnx.vision.images import load_image
from fg_onnx.vision.overlay import display_map, overlay_heatmap
from fg_onnx.vision.preprocess import preprocess_batch, preset

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def test_explains_the_sample_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(out), "--batch-size", "4",
                 "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    images = sorted(p for p in IMAGES.iterdir())
    assert len(rows) == len(images)
    for row in rows:
        source = cv2.imread(row["file"])
        overlay = cv2.imread(str(out / row["overlay"]))
        assert overlay.shape == source.shape
        saliency = np.load(out / row["map"])
        assert saliency.shape == (64, 64)
        assert row["completeness_error"] < 1e-4
        assert row["target"] == row["predicted"]
        # the sample images are named after their class
        assert Path(row["file"]).stem.split("_")[0] == row["predicted_label"]
    with (out / "summary.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == len(images)
    assert "explained 6 image(s)" in capsys.readouterr().out


def test_corrupt_images_are_skipped_and_the_run_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(IMAGES / "circle.png", folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(folder), "-o", str(out), "--target", "2"]) == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.png" in captured.err
    assert "explained 1 image(s), skipped 2" in captured.out
    rows = json.loads((out / "summary.json").read_text())
    assert [r["target"] for r in rows] == [2]


def test_existing_results_are_not_overwritten(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("mine")
    assert main(["explain", str(SAMPLE), str(IMAGES / "circle.png"), "-o", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "mine"


def test_missing_image_path_is_one_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(SAMPLE), str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and err.count("\n") == 1


def test_float16_explains_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(out), "--device", "cpu",
                 "--precision", "float16"]) == 0
    assert "running on CPUExecutionProvider (float16; onnxruntime's CPU provider computes" in (
        capsys.readouterr().err)
    rows = json.loads((out / "summary.json").read_text())
    assert all(row["finite"] and row["completeness_error"] < 3e-3 for row in rows)


def test_float16_overflow_names_the_remedy(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Logits 90000 times the sample's are beyond float16's range."""
    model = onnx.load(SAMPLE)
    logits = model.graph.output[0].name
    model.graph.node.extend([onnx.helper.make_node("Mul", [logits, "factor"], ["large"]),
                             onnx.helper.make_node("Mul", ["large", "factor"], ["huge"])])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(300), "factor"))
    model.graph.output[0].name = "huge"
    onnx.save(model, tmp_path / "huge.onnx")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "huge.onnx"), str(IMAGES / "circle.png"), "-o",
                 str(out), "--device", "cpu", "--precision", "float16"]) == 1
    err = capsys.readouterr().err
    assert "NaN/Inf in the score" in err
    assert err.endswith("fg-onnx: float16 overflowed: lower --gradient-scale, or use "
                        "--precision float32\n")
    assert main(["explain", str(tmp_path / "huge.onnx"), str(IMAGES / "circle.png"), "-o",
                 str(out), "--device", "cpu", "--force"]) == 0


def test_a_fixed_batch_model_explains_at_the_default_batch_size(tmp_path: Path) -> None:
    """Model-zoo exports fix the batch to 1 ([1, 3, H, W]); --batch-size stays 16."""
    static = tmp_path / "static.onnx"
    onnx.save(with_symbolic_dims(onnx.load(SAMPLE), {"image": [1, 3, 64, 64]}), static)
    for model, out in ((static, tmp_path / "static"), (SAMPLE, tmp_path / "dynamic")):
        assert main(["explain", str(model), str(IMAGES), "-o", str(out), "--device", "cpu"]) == 0
    rows = json.loads((tmp_path / "static" / "summary.json").read_text())
    reference = json.loads((tmp_path / "dynamic" / "summary.json").read_text())
    assert len(rows) == len(reference) == 6
    for row, want in zip(rows, reference, strict=True):
        assert row["predicted"] == want["predicted"]
        assert row["score"] == pytest.approx(want["score"], rel=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_a_grayscale_model_explains_gray_images_over_colour_overlays(
        layout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The model copies its one channel into the sample model's three: the scores are the
    sample model's on the gray images, with the imagenet values averaged."""
    model = tmp_path / "gray.onnx"
    onnx.save(grayscale_model(onnx.load(SAMPLE), layout), model)
    out = tmp_path / "out"
    assert main(["explain", str(model), str(IMAGES), "-o", str(out), "--device", "cpu",
                 "--preset", "imagenet"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    images = [load_image(row["file"]) for row in rows]
    gray = preprocess_batch(images, preset("imagenet", (64, 64), channels=1))
    reference = FullGrad(SAMPLE, device="cpu").explain(np.repeat(gray, 3, axis=1))
    np.testing.assert_allclose([row["score"] for row in rows], reference.scores, rtol=1e-5)
    for row, image in zip(rows, images, strict=True):
        saliency = np.load(out / row["map"])
        written = cv2.cvtColor(cv2.imread(str(out / row["overlay"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, overlay_heatmap(image, display_map(saliency)))
    assert main(["explain", str(model), str(IMAGES / "circle.png"), "-o", str(out), "--force",
                 "--mean", "0.5", "--std", "0.25"]) == 0
    capsys.readouterr()
    assert main(["explain", str(model), str(IMAGES / "circle.png"), "-o", str(out), "--force",
                 "--mean", "0.485,0.456,0.406"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("fg-onnx: error: the model takes 1-channel (grayscale) images: give "
                        "--mean one value, not 3\n")


def test_output_names_never_collide(tmp_path: Path) -> None:
    """a.png would get the first free generated stem; a_1 is a_1.png's own."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for source, name in [("circle.png", "a.png"), ("cross.jpg", "a.jpg"),
                         ("triangle.png", "a_1.png"), ("square.jpg", "A.jpg")]:
        shutil.copy(IMAGES / source, folder / name)
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(folder), "-o", str(out), "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert {Path(r["file"]).name: r["map"] for r in rows} == {
        "A.jpg": "A_fullgrad.npy", "a.jpg": "a_2_fullgrad.npy", "a.png": "a_3_fullgrad.npy",
        "a_1.png": "a_1_fullgrad.npy"}
    for row in rows:  # each map is its own image's
        alone = tmp_path / "alone" / Path(row["file"]).name
        assert main(["explain", str(SAMPLE), row["file"], "-o", str(alone), "--device",
                     "cpu"]) == 0
        np.testing.assert_array_equal(np.load(out / row["map"]),
                                      np.load(alone / f"{Path(row['file']).stem}_fullgrad.npy"))


def test_outputs_never_replace_an_input_image(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(IMAGES / "circle.png", out / "a.png")
    shutil.copy(IMAGES / "cross.jpg", out / "a_fullgrad.png")
    before = (out / "a_fullgrad.png").read_bytes()
    assert main(["explain", str(SAMPLE), str(out / "a.png"), str(out / "a_fullgrad.png"),
                 "-o", str(out), "--device", "cpu"]) == 0
    assert (out / "a_fullgrad.png").read_bytes() == before
    rows = json.loads((out / "summary.json").read_text())
    assert [r["overlay"] for r in rows] == ["a_1_fullgrad.png", "a_fullgrad_fullgrad.png"]


@pytest.mark.parametrize(("flags", "results"), [([], "fg_out"), (["-o", "."], ".")])
def test_a_second_run_does_not_explain_the_first_ones_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], results: str) -> None:
    for name in ("circle.png", "cross.jpg"):
        shutil.copy(IMAGES / name, tmp_path / name)
    shutil.copy(SAMPLE, tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    argv = ["explain", "m.onnx", ".", *flags, "--device", "cpu"]
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0
    rows = json.loads((Path(results) / "summary.json").read_text())
    assert sorted(Path(r["file"]).name for r in rows) == ["circle.png", "cross.jpg"]
    # a result given by path is still explained
    assert main(["explain", "m.onnx", str(Path(results) / rows[0]["overlay"]), "-o", "again",
                 "--device", "cpu"]) == 0


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--alpha", "5", "expected a number in [0, 1], got '5'"),
    ("--alpha", "nan", "expected a number in [0, 1], got 'nan'"),
    ("--alpha", "x", "expected a number in [0, 1], got 'x'"),
    ("--target", "-7", "expected a class index (0, 1, ...) or -1 for the predicted class, "
                       "got '-7'"),
    ("--target", "9" * 20, "expected a class index (0, 1, ...) or -1 for the predicted class, "
                           f"got '{'9' * 20}'"),
])
def test_bad_alpha_and_target_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               flag: str, value: str, expected: str) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES / "circle.png"), "-o", str(out),
                 f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fg-onnx: error: argument {flag}: {expected}") and err.count("\n") == 1
    assert not out.exists()


def test_target_minus_one_is_the_predicted_class(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES), "-o", str(out), "--target", "-1",
                 "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert all(r["target"] == r["predicted"] for r in rows)


@pytest.mark.parametrize("flag", ["--input-size", "--size"])
@pytest.mark.parametrize("value", ["100000x100000", "9" * 20])
def test_huge_sizes_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     flag: str, value: str) -> None:
    model = onnx.load(SAMPLE)
    for axis in (2, 3):  # open H, W: any size would be taken
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = f"d{axis}"
    onnx.save(model, tmp_path / "open.onnx")
    assert main(["explain", str(tmp_path / "open.onnx"), str(IMAGES / "circle.png"), "-o",
                 str(tmp_path / "out"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fg-onnx: error: argument {flag}: '{value}' is too large: ")
    assert "megapixels, the limit is 100 " in err and err.count("\n") == 1
