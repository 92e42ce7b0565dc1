"""``fg-onnx evaluate`` and the --method options, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers import grayscale_model, with_symbolic_dims

from fg_onnx.cli.main import main

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def test_evaluate_writes_table_json_and_plot(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), str(IMAGES / "cross.jpg"),
            "--methods", "gradient,grad-cam++", "--k", "1,10", "--deletion-steps", "4",
            "--fill", "black", "-o", str(out), "--device", "cpu"]
    assert main(args) == 0
    table = (out / "evaluation.md").read_text()
    assert "| 1 % | 10 % |" in table and "black pixel" in table
    assert {"| random |", "| gradient |", "| grad-cam++ |"} <= {
        line[: line.index(" |", 2) + 2] for line in table.splitlines() if line.startswith("| ")}
    data = json.loads((out / "evaluation.json").read_text())
    assert [r["method"] for r in data["results"]] == ["random", "gradient", "grad-cam++"]
    assert data["images"] == 2 and data["ks"] == [1.0, 10.0]
    plot = cv2.imread(str(out / "evaluation.png"))
    assert plot is not None and plot.shape[0] > 100
    assert "| gradient |" in capsys.readouterr().out
    assert main(args) == 2  # results exist: --force needed
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["evaluate", str(SAMPLE), str(IMAGES), "--methods", "fullgrad,nope"],
    ["evaluate", str(SAMPLE), str(IMAGES), "--k", "0.1,150"],
    ["evaluate", str(SAMPLE), str(IMAGES), "--k", "abc"],
    ["explain", str(SAMPLE), str(IMAGES), "--method", "nope"],
    ["augment", str(SAMPLE), "--method", "smoothgrad"],
    ["explain", str(SAMPLE), str(IMAGES), "--method", "smoothgrad", "--samples", "0"],
])
def test_user_errors_are_one_line(argv: list[str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fg-onnx: error:") and "\n" not in err


def test_explain_with_a_method(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE), str(IMAGES / "square.jpg"), "--method",
                 "integrated-gradients", "--steps", "64", "-o", str(out),
                 "--device", "cpu"]) == 0
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["overlay"] == "square_integrated-gradients.png"
    assert row["completeness_error"] < 0.05  # IG's own check: Σ IG ≈ f(x) − f(0)
    assert np.load(out / row["map"]).shape == (64, 64)


def _evaluate_fullgrad(model: onnx.ModelProto, tmp_path: Path, *options: str) -> dict:
    """``fg-onnx evaluate`` of ``model`` with fullgrad on two images (a quick setting);
    evaluation.json once it succeeded."""
    path, out = tmp_path / "model.onnx", tmp_path / "eval"
    onnx.save(model, path)
    assert main(["evaluate", str(path), str(IMAGES / "circle.png"), str(IMAGES / "cross.jpg"),
                 "--methods", "fullgrad", "--k", "1,10", "--deletion-steps", "2",
                 "-o", str(out), "--device", "cpu", *options]) == 0
    data: dict = json.loads((out / "evaluation.json").read_text())
    assert [r["method"] for r in data["results"]] == ["random", "fullgrad"]
    return data


def test_a_fixed_batch_model_is_evaluated(tmp_path: Path) -> None:
    """Its scorer used to run 64 perturbed copies at once whatever --batch-size."""
    static = with_symbolic_dims(onnx.load(SAMPLE), {"image": [1, 3, 64, 64]})
    _evaluate_fullgrad(static, tmp_path, "--batch-size", "1")


def test_a_grayscale_nhwc_model_is_evaluated(tmp_path: Path) -> None:
    data = _evaluate_fullgrad(grayscale_model(onnx.load(SAMPLE), "nhwc"), tmp_path,
                              "--fill", "black")
    assert all(np.isfinite(r["perturbation"]).all() for r in data["results"])


def test_a_second_run_does_not_evaluate_the_first_ones_plot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(IMAGES / "circle.png", tmp_path / "circle.png")
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", str(SAMPLE), ".", "--methods", "gradient", "--k", "10",
            "--deletion-steps", "2", "--device", "cpu"]
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0
    assert json.loads((tmp_path / "fg_eval" / "evaluation.json").read_text())["images"] == 1


def test_unreadable_images_are_skipped_as_explain_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "eval"
    argv = ["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), str(broken), "--methods",
            "gradient", "--k", "10", "--deletion-steps", "2", "-o", str(out), "--device", "cpu"]
    assert main(argv) == 1
    assert "fg-onnx: skipped: cannot decode image" in capsys.readouterr().err
    assert json.loads((out / "evaluation.json").read_text())["images"] == 1
    assert main([*argv[:2], str(broken), *argv[4:], "--force"]) == 2
    assert capsys.readouterr().err.strip().endswith("none of the images could be read")


def test_input_size_sizes_the_images_of_an_open_size_model(tmp_path: Path) -> None:
    # explain takes --input-size for a model with open H and W; evaluate wanted --size.
    open_size = with_symbolic_dims(onnx.load(SAMPLE), {"image": ["N", 3, "H", "W"]})
    _evaluate_fullgrad(open_size, tmp_path, "--input-size", "64x64")


def _square_mask(size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return mask


def test_evaluate_with_masks_and_with_boxes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    images = [IMAGES / "circle.png", IMAGES / "cross.jpg", IMAGES / "square.jpg"]
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "circle.png"), _square_mask(64))  # another size: resized
    cv2.imwrite(str(masks / "cross.png"), np.zeros((128, 128), np.uint8))  # empty
    base = ["evaluate", str(SAMPLE), *map(str, images), "--methods", "gradient", "--k", "10",
            "--deletion-steps", "2", "--device", "cpu"]
    assert main([*base, "--masks", str(masks), "-o", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 image(s) have no mask" in err and "empty mask of 1 image(s)" in err
    data = json.loads((tmp_path / "m" / "evaluation.json").read_text())
    for row in data["results"]:
        assert row["localisation"]["images"] == 1
        assert set(row["localisation"]) >= {"pointing_game", "relevance_mass",
                                            "relevance_rank", "mask_auc"}
    assert "Localisation" in (tmp_path / "m" / "report.html").read_text()
    boxes = {"images": [{"id": 7, "file_name": "circle.png"}, {"id": 8, "file_name": "x.png"}],
             "annotations": [{"image_id": 7, "bbox": [32, 32, 64, 64]}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    assert main([*base, "--boxes", str(tmp_path / "boxes.json"), "-o", str(tmp_path / "b")]) == 0
    boxed = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    # the same square (the circle image is 128 px): the same numbers as with its mask
    assert boxed["results"][1]["localisation"] == data["results"][1]["localisation"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--masks", "nowhere"], "is not a folder"),
    (["--boxes", "nowhere.json"], "cannot read --boxes"),
])
def test_bad_ground_truth_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      extra: list[str], message: str) -> None:
    args = ["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), "--methods", "gradient",
            "-o", str(tmp_path / "out"), "--device", "cpu", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_masks_for_no_image_are_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "other.png"), _square_mask(8))
    args = ["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), "--methods", "gradient",
            "--masks", str(tmp_path / "masks"), "-o", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 2
    assert "no image has a mask" in capsys.readouterr().err
