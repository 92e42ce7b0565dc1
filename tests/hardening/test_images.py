"""Bad images through ``fg-onnx explain``: each skipped with one line, the rest explained."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fg_onnx.vision.images import load_image
from hardening.support import IMAGES, SAMPLE, run_cli


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (its data is a few bytes only)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def _cmyk_tiff(pixels: np.ndarray) -> bytes:
    """An uncompressed CMYK TIFF (PhotometricInterpretation 5) of ``pixels`` [H, W, 4]."""
    height, width, _ = pixels.shape
    data = pixels.tobytes()
    tags = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 5),
            (273, 4, 0), (277, 3, 4), (278, 3, height), (279, 4, len(data)), (284, 3, 1)]
    offset = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, value in tags:
        value = offset if tag == 273 else value
        out += struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value,
                           *([0] if kind == 3 else []))
    return out + b"\x00\x00\x00\x00" + data


def test_bad_images_are_skipped_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(IMAGES / "circle.png", folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge.png").write_bytes(_png_header(20000, 20000))
    (folder / "locked.png").write_bytes((IMAGES / "circle.png").read_bytes())
    (folder / "loop").symlink_to(folder)  # a symlink loop: each real folder is visited once
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.png":  # tests may run as root, where chmod does not lock
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    started = time.perf_counter()
    code, out, err = run_cli(["explain", SAMPLE, folder, "-o", tmp_path / "out"], capsys)
    assert time.perf_counter() - started < 20  # the huge image is refused from its header
    assert code == 1
    skipped = [line for line in err.splitlines() if line.startswith("fg-onnx: skipped:")]
    assert len(skipped) == 3 and "Traceback" not in err
    for name, words in [("empty.png", "empty"), ("huge.png", "20000x20000"),
                        ("locked.png", "Permission denied")]:
        assert any(name in line and words in line for line in skipped), err
    assert "explained 1 image(s), skipped 3" in out
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [Path(r["file"]).name for r in rows] == ["good.png"]


def test_16_bit_and_cmyk_images_are_explained(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = cv2.imread(str(IMAGES / "circle.png"), cv2.IMREAD_COLOR)
    cv2.imwrite(str(folder / "deep.png"), rgb.astype(np.uint16) * 257)
    cmyk = np.zeros((64, 64, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    (folder / "cmyk.tif").write_bytes(_cmyk_tiff(cmyk))
    np.testing.assert_array_equal(load_image(folder / "cmyk.tif")[0, 0], [0, 255, 255])
    np.testing.assert_array_equal(load_image(folder / "deep.png"), rgb[..., ::-1])
    code, out, err = run_cli(["explain", SAMPLE, folder, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "explained 2 image(s)" in out
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert all(r["finite"] for r in rows)


def test_empty_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no images")
    code, _, err = run_cli(["explain", SAMPLE, tmp_path / "nothing", "-o", tmp_path / "o"],
                           capsys)
    assert code == 2 and err.startswith("fg-onnx: error: no image files")
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
