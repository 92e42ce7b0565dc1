"""Heatmap overlays and atomic PNG writing."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fg_onnx.errors import FgOnnxError, OutputExistsError
from fg_onnx.vision.overlay import colorize, overlay_heatmap, save_png


def _hot_corner_map(height: int = 8, width: int = 8) -> np.ndarray:
    saliency = np.zeros((height, width), np.float32)
    saliency[: height // 2, : width // 2] = 1.0
    return saliency


def test_overlay_has_the_image_size_for_any_map_size() -> None:
    image = np.full((50, 70, 3), 90, np.uint8)
    out = overlay_heatmap(image, _hot_corner_map(8, 8))
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8


def test_hot_region_is_red_and_cold_region_blue() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    out = overlay_heatmap(image, _hot_corner_map(16, 16), alpha=1.0).astype(int)
    hot, cold = out[5, 5], out[60, 60]
    assert hot[0] > 100 and hot[1] < 30 and hot[2] < 30, f"hot pixel {hot} is not red (RGB)"
    assert cold[2] > 100 and cold[0] < 30 and cold[1] < 30, f"cold pixel {cold} is not blue"


def test_blend_weights() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    zero = np.zeros((4, 4), np.float32)
    # JET maps 0 to RGB (0, 0, 128): half of 100 plus half of that
    np.testing.assert_array_equal(overlay_heatmap(image, zero, alpha=0.5)[0, 0], [50, 50, 114])
    np.testing.assert_array_equal(overlay_heatmap(image, zero, alpha=0.0), image)


def test_non_finite_and_out_of_range_values_do_not_break_the_map() -> None:
    saliency = np.array([[np.nan, -3.0], [np.inf, 7.0]], np.float32)
    heat = colorize(saliency, (2, 2))
    np.testing.assert_array_equal(heat[0, 0], heat[0, 1])  # NaN and negatives read as 0
    np.testing.assert_array_equal(heat[1, 0], heat[1, 1])  # +inf and > 1 read as 1


def test_rejects_bad_arguments() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(image, np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ValueError, match="2-D"):
        overlay_heatmap(image, np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="RGB uint8"):
        overlay_heatmap(image.astype(np.float32), np.zeros((4, 4)))


def test_save_png_round_trip_leaves_no_temporary_files(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), np.uint8)
    path = tmp_path / "résultat.png"
    save_png(path, rgb)
    save_png(path, rgb[::-1].copy())  # replacing an existing file is allowed by default
    read = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert read is not None
    np.testing.assert_array_equal(read[..., ::-1], rgb[::-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["résultat.png"]


def test_save_png_uses_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_png(tmp_path / "x.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644


def test_save_png_refuses_to_overwrite_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="refusing to overwrite"):
        save_png(path, np.zeros((2, 2, 3), np.uint8), overwrite=False)
    assert path.read_bytes() == b"keep"


def test_save_png_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FgOnnxError, match=r"could not write .*x\.png: No such file or directory"):
        save_png(tmp_path / "no" / "x.png", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
