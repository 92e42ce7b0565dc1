"""``fg-onnx explain --engine ray`` with targets writes what ``--engine local`` writes: the
same summary rows, the same per-target files, notes, exit codes and one-line errors; a bad
target is refused before Ray starts. One local Ray for the module (tests/ray_local.py),
started by the first test that needs it."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from target_models import BoxDetector, ColumnCTC, Embedder, PixelSegmenter, exported

pytest.importorskip("ray")

from ray_local import local_ray

import fg_onnx.ray
from fg_onnx.cli.main import main

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


@pytest.fixture(scope="module")
def started_ray() -> Iterator[None]:
    yield from local_ray()


def _image(path: Path, size: tuple[int, int], seed: int = 5) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)
    return path


def _same_rows(local: list[dict[str, object]], distributed: list[dict[str, object]]) -> None:
    """Field for field, in order; floats (scores, errors) up to float rounding."""
    assert len(distributed) == len(local) > 0
    for ours, theirs in zip(local, distributed, strict=True):
        assert list(theirs) == list(ours)
        for key, value in ours.items():
            if isinstance(value, float):
                assert theirs[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
            else:
                assert theirs[key] == value, key


def _both(tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str],
          workers: int = 1, code: int = 0) -> tuple[list[dict[str, object]], Path, Path]:
    """Runs ``arguments`` on both engines; checks that they exit with ``code``, print the
    same and write the same files (maps up to float rounding); returns the local rows."""
    outputs = []
    for engine, extra in (("local", []), ("ray", ["--workers", str(workers)])):
        out = tmp_path / engine
        assert main(["explain", *arguments, "-o", str(out), "--device", "cpu",
                     "--engine", engine, *extra]) == code
        printed = capsys.readouterr()
        outputs.append((out, printed.out.replace(str(out), "OUT").splitlines()[-1:],
                        [line for line in printed.err.splitlines()
                         if line.startswith("fg-onnx:") and "running on" not in line]))
    (local, local_out, local_err), (ray, ray_out, ray_err) = outputs
    assert ray_out == local_out and ray_err == local_err
    assert sorted(p.name for p in ray.iterdir()) == sorted(p.name for p in local.iterdir())
    rows = json.loads((local / "summary.json").read_text())
    _same_rows(rows, json.loads((ray / "summary.json").read_text()))
    with (local / "summary.csv").open() as ours, (ray / "summary.csv").open() as theirs:
        assert next(csv.reader(theirs)) == next(csv.reader(ours))
    for row in rows:
        if row["map"]:
            np.testing.assert_allclose(np.load(ray / str(row["map"])),
                                       np.load(local / str(row["map"])), rtol=1e-4, atol=1e-6)
    return rows, local, ray


@pytest.mark.usefixtures("started_ray")
def test_top_k_classes_and_a_skipped_image(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A relative path: both engines' skip messages name it as given.
    monkeypatch.chdir(tmp_path)
    broken = Path("broken.png")
    broken.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rows, local, ray = _both(tmp_path, capsys, [str(SAMPLE), str(IMAGES), str(broken),
                                                "--top-k", "2", "--batch-size", "4"],
                             workers=2, code=1)  # exit 1: an image was skipped
    assert len(rows) == 2 * len(list(IMAGES.iterdir()))
    assert [row["rank"] for row in rows[:2]] == [0, 1]
    assert all(float(row["completeness_error"]) < 1e-4 for row in rows)  # type: ignore[arg-type]
    assert (ray / "report.html").exists() and (local / "report.html").exists()


@pytest.mark.usefixtures("started_ray")
def test_detections_boxes_and_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = exported(BoxDetector(), tmp_path / "det.onnx")
    wide = _image(tmp_path / "wide.png", (64, 96))  # boxes scaled 3x and 2x
    small = _image(tmp_path / "small.png", (32, 32), seed=6)
    rows, local, ray = _both(tmp_path / "found", capsys,
                             [str(model), str(wide), str(small), "--threshold", "0",
                              "--top-k", "2", "--preset", "zero-one", "--batch-size", "1"],
                             workers=2)
    assert [row["file"] for row in rows] == [str(wide)] * 2 + [str(small)] * 2
    x0, y0, x1, y1 = rows[0]["box"]  # type: ignore[misc]
    assert (x1 - x0, y1 - y0) == (24.0, 16.0)
    overlay = str(rows[0]["overlay"])
    # The drawn box (the only thing beside the heatmap) is where the local run drew it.
    np.testing.assert_allclose(cv2.imread(str(ray / overlay)).astype(int),
                               cv2.imread(str(local / overlay)).astype(int), atol=1)

    rows, _, _ = _both(tmp_path / "none", capsys,
                       [str(model), str(wide), "--threshold", "1", "--preset", "zero-one"])
    assert rows == [{**rows[0], "note": "no detection above the threshold 1", "map": None}]


@pytest.mark.usefixtures("started_ray")
def test_a_segmentation_region_is_outlined(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = exported(PixelSegmenter(), tmp_path / "seg.onnx")
    image = _image(tmp_path / "scene.png", (64, 64))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    rows, _, ray = _both(tmp_path, capsys, [str(model), str(image), "--mask",
                                            str(tmp_path / "mask.png"), "--target", "1"])
    (row,) = rows
    assert row["task"] == "segmentation" and row["box"] == [16.0, 16.0, 48.0, 48.0]
    assert (cv2.imread(str(ray / str(row["overlay"])))[16, 16:48] == 255).all()  # outline


@pytest.mark.usefixtures("started_ray")
def test_ctc_characters_and_an_embedding_reference(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ctc = exported(ColumnCTC(), tmp_path / "ctc.onnx", shape=(2, 3, 8, 24))
    (tmp_path / "alphabet.txt").write_text("a\nb\nc\nd\n")
    lines = [_image(tmp_path / f"line{i}.png", (8, 24), seed=i) for i in range(3)]
    rows, _, _ = _both(tmp_path / "ctc", capsys, [
        str(ctc), *map(str, lines), "--alphabet", str(tmp_path / "alphabet.txt"),
        "--batch-size", "2"])
    assert {row["task"] for row in rows} == {"sequence"}
    first = [row for row in rows if row["file"] == str(lines[0])]
    assert "".join(str(row["character"]) for row in first) == first[0]["text"]

    # The reference's embedding is computed once, by the driver, and sent to the actors.
    embedder = exported(Embedder(), tmp_path / "emb.onnx")
    image = _image(tmp_path / "a.png", (32, 32))
    cv2.imwrite(str(tmp_path / "b.png"), cv2.imread(str(image))[::-1])
    rows, _, _ = _both(tmp_path / "emb", capsys, [str(embedder), str(image), "--reference",
                                                  str(tmp_path / "b.png"),
                                                  "--preset", "zero-one"])
    (row,) = rows
    assert row["task"] == "embedding" and -1 <= float(row["score"]) <= 1  # type: ignore[arg-type]


@pytest.mark.usefixtures("started_ray")
def test_an_error_on_an_actor_is_one_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A box that fits the first image (the driver's check) but covers no pixel of a larger
    one: the actor's error ends the run in one line, as the local run's does."""
    model = exported(PixelSegmenter(), tmp_path / "seg.onnx")
    small = _image(tmp_path / "a.png", (32, 32))
    large = _image(tmp_path / "b.png", (256, 256))
    for engine in ("local", "ray"):
        assert main(["explain", str(model), str(small), str(large), "-o",
                     str(tmp_path / engine), "--box", "0,0,2,2", "--device", "cpu",
                     "--engine", engine]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "fg-onnx: error: the box [0.0, 0.0, 0.25, 0.25] covers no pixel of the 32x32 "
            "input")


def test_bad_targets_are_refused_before_ray_starts(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ray() -> None:
        raise AssertionError("Ray was used")

    monkeypatch.setattr(fg_onnx.ray, "_ray", no_ray)
    image = str(IMAGES / "circle.png")
    segmenter = exported(PixelSegmenter(), tmp_path / "seg.onnx")
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((8, 8), np.uint8))
    embedder = exported(Embedder(), tmp_path / "emb.onnx")
    np.save(tmp_path / "short.npy", np.ones(3))
    cases = [
        ([str(SAMPLE), image, "--label", "hexagon"],
         "the model has no label 'hexagon' (labels: circle, square, triangle, cross)"),
        ([str(SAMPLE), image, "--top-k", "2", "--target", "7"],
         "class 7 is out of range: the model has 4 classes (0..3)"),
        ([str(segmenter), image, "--mask", str(tmp_path / "empty.png")],
         "the mask is empty (no nonzero pixel at the output's size)"),
        ([str(embedder), image, "--reference", str(tmp_path / "short.npy")],
         "the reference embedding has 3 values; the model's"),
        ([str(SAMPLE), image, "--top-k", "2", "--method", "smoothgrad"],
         "--method smoothgrad explains one class per image"),
    ]
    for index, (arguments, message) in enumerate(cases):
        out = tmp_path / f"out{index}"
        assert main(["explain", *arguments, "-o", str(out), "--device", "cpu",
                     "--engine", "ray"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"fg-onnx: error: {message}")
        assert "Ray was used" not in "\n".join(err) and "Traceback" not in "\n".join(err)
        assert not out.exists()
