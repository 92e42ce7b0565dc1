"""Reading images in many encodings, refusing bad files, and finding images in directories."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.vision.images import iter_image_paths, load_image, sniff


def _rgb_pattern(height: int = 24, width: int = 36) -> np.ndarray:
    """Distinct per-channel content, so a swapped channel order cannot go unnoticed."""
    yy, xx = np.mgrid[0:height, 0:width]
    red = 200 - 2 * xx
    green = 40 + 3 * yy
    blue = 10 + xx + yy
    return np.stack([red, green, blue], axis=2).astype(np.uint8)


def _write(path: Path, pixels: np.ndarray, params: list[int] | None = None) -> Path:
    """Encodes OpenCV-ordered ``pixels`` with the encoder named by the path's extension."""
    ok, data = cv2.imencode(path.suffix, pixels, params or [])
    assert ok, f"OpenCV cannot encode {path.suffix} here"
    path.write_bytes(data.tobytes())
    return path


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("x.png", None),
        ("x.bmp", None),
        ("x.tiff", None),
        ("x.tif", None),
        ("x.webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # 101 = lossless
    ],
)
def test_lossless_formats_read_exactly_as_rgb(tmp_path: Path, name: str,
                                              params: list[int] | None) -> None:
    rgb = _rgb_pattern()
    image = load_image(_write(tmp_path / name, rgb[..., ::-1], params))
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, rgb)


@pytest.mark.parametrize("name", ["x.jpg", "x.jpeg", "x.webp"])
def test_lossy_formats_are_close_to_the_original(tmp_path: Path, name: str) -> None:
    rgb = _rgb_pattern()
    image = load_image(_write(tmp_path / name, rgb[..., ::-1]))
    assert image.shape == rgb.shape
    error = np.abs(image.astype(int) - rgb.astype(int)).mean(axis=(0, 1))
    assert (error < 6).all(), f"per-channel mean error {error}: channels swapped or lost"


def test_non_ascii_path(tmp_path: Path) -> None:
    rgb = _rgb_pattern()
    path = _write(tmp_path / "bild_ü_图像 ✓.png", rgb[..., ::-1])
    np.testing.assert_array_equal(load_image(path), rgb)
    np.testing.assert_array_equal(load_image(str(path)), rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = _rgb_pattern()[..., 1]
    image = load_image(_write(tmp_path / "g.png", gray))
    assert image.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., :3] = (40, 120, 200)  # B, G, R
    bgra[..., 3] = [[255, 0, 128], [64, 255, 1]]
    image = load_image(_write(tmp_path / "a.png", bgra))
    expected_red = np.array([[200, 0, 100], [50, 200, 1]])  # round(200 * a / 255)
    expected_blue = np.array([[40, 0, 20], [10, 40, 0]])  # round(40 * a / 255)
    np.testing.assert_array_equal(image[..., 0], expected_red)
    np.testing.assert_array_equal(image[..., 2], expected_blue)


@pytest.mark.parametrize("name", ["d.png", "d.tiff"])
def test_16_bit_is_scaled_to_8_bit(tmp_path: Path, name: str) -> None:
    red = np.array([[0, 257 * 100, 65535, 128]], np.uint16)
    green = np.array([[0, 257 * 50, 32768, 129]], np.uint16)  # rounds, does not truncate
    image = load_image(_write(tmp_path / name, np.stack([red, green, red], axis=2)))
    np.testing.assert_array_equal(image[..., 0], [[0, 100, 255, 0]])
    np.testing.assert_array_equal(image[..., 1], [[0, 50, 128, 1]])


def test_16_bit_grayscale(tmp_path: Path) -> None:
    values = np.array([[65535, 257 * 7]], np.uint16)
    image = load_image(_write(tmp_path / "g16.png", values))
    np.testing.assert_array_equal(image, [[[255] * 3, [7] * 3]])


def test_float_tiff_is_read_as_zero_to_one(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    image = load_image(_write(tmp_path / "f.tiff", np.stack([values] * 3, axis=2)))
    np.testing.assert_array_equal(image[..., 0], [[0, 128, 255, 255, 0]])


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Inserts a minimal little-endian EXIF APP1 segment holding only the orientation tag."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1,
                                                                  orientation, 0)
    payload = b"Exif\x00\x00" + tiff + struct.pack("<I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    bgr = np.zeros((20, 40, 3), np.uint8)
    bgr[:, :20] = 255  # left half white
    ok, data = cv2.imencode(".jpg", bgr)
    assert ok
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_with_exif_orientation(data.tobytes(), 6))  # 6: rotate 90° clockwise
    image = load_image(path)
    assert image.shape == (40, 20, 3)
    assert image[:15].mean() > 200 and image[25:].mean() < 50  # left half now on top


@pytest.mark.parametrize(
    ("ext", "params", "channels"),
    [
        (".png", [], 3), (".jpg", [], 3), (".bmp", [], 3), (".bmp", [], 4), (".tiff", [], 3),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 3),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 4),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], 3),
    ],
)
def test_sniff_reads_the_size_from_the_header(ext: str, params: list[int],
                                              channels: int) -> None:
    ok, data = cv2.imencode(ext, np.zeros((17, 33, channels), np.uint8), params)
    assert ok
    kind, size = sniff(data.tobytes())
    assert kind is not None and size == (33, 17)


def test_refuses_images_over_the_pixel_limit_from_the_header(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    assert ok
    patched = bytearray(data.tobytes())
    patched[16:24] = struct.pack(">II", 30000, 20000)  # IHDR claims 600 megapixels
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(patched))
    with pytest.raises(ImageError, match=r"too large: .*30000x20000 \(600 megapixels"):
        load_image(path)


def test_refuses_images_over_the_pixel_limit_after_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.ppm", np.zeros((10, 12, 3), np.uint8))  # no header sniffing
    assert sniff(path.read_bytes()) == (None, None)
    assert load_image(path, max_pixels=120).shape == (10, 12, 3)
    with pytest.raises(ImageError, match="too large"):
        load_image(path, max_pixels=119)


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ImageError, match="not a supported image format"):
        load_image(path)


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".png", _rgb_pattern(64, 64))
    assert ok
    path = tmp_path / "cut.png"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated PNG"):
        load_image(path)


def test_truncated_header_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "stub.bmp"
    path.write_bytes(b"BM\x00\x01")
    with pytest.raises(ImageError, match="corrupt or truncated BMP"):
        load_image(path)


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_image_errors_are_one_line_fg_onnx_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    with pytest.raises(FgOnnxError) as info:
        load_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# iter_image_paths


def _tree(root: Path) -> None:
    """root/{b.jpg, a.PNG, .hidden.png, notes.txt, sub/{c.webp, deeper/d.TIFF, loop -> root}}."""
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ["b.jpg", "a.PNG", ".hidden.png", "notes.txt", "sub/c.webp", "sub/deeper/d.TIFF"]:
        (root / rel).write_bytes(b"x")
    os.symlink(root, root / "sub" / "loop", target_is_directory=True)


def test_directories_are_searched_recursively_in_order(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = iter_image_paths([tmp_path])
    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.TIFF"]


def test_symlinked_directory_outside_the_tree_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.png").write_bytes(b"x")
    (tmp_path / "top").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "top" / "link", target_is_directory=True)
    assert iter_image_paths([tmp_path / "top"]) == [tmp_path / "top" / "link" / "x.png"]


def test_files_keep_argument_order_without_duplicates(tmp_path: Path) -> None:
    _tree(tmp_path)
    odd = tmp_path / "notes.txt"
    found = iter_image_paths([tmp_path / "b.jpg", odd, tmp_path, str(tmp_path / "b.jpg")])
    assert found[:2] == [tmp_path / "b.jpg", odd]  # a file named explicitly is kept as given
    assert found[2:] == [tmp_path / "a.PNG", tmp_path / "sub/c.webp",
                         tmp_path / "sub/deeper/d.TIFF"]


def test_missing_paths_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(b"x")
    with pytest.raises(ImageError, match=r"not found: .*gone1\.png, .*gone2"):
        iter_image_paths([tmp_path / "gone1.png", tmp_path / "ok.png", tmp_path / "gone2"])


def test_no_images_found_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_bytes(b"x")
    with pytest.raises(ImageError, match="no image files"):
        iter_image_paths([tmp_path])


def test_the_output_folder_is_skipped_inside_a_search(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "sub" / "out" / "deeper").mkdir(parents=True)
    for rel in ["out/x_res.png", "out/deeper/y.png"]:
        (tmp_path / "sub" / rel).write_bytes(b"x")
    os.symlink(tmp_path / "sub" / "out", tmp_path / "out_link", target_is_directory=True)
    explicit = tmp_path / "sub" / "out" / "x_res.png"
    for outdir in (tmp_path / "sub" / "out", tmp_path / "sub" / "." / "out",
                   tmp_path / "out_link"):
        found = iter_image_paths([tmp_path, explicit], outdir=outdir)
        relative = [p.relative_to(tmp_path).as_posix() for p in found]
        assert relative == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.TIFF",
                            "sub/out/x_res.png"]  # the last one given by path


def test_a_given_folder_that_is_the_output_folder_loses_only_results(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "b_res.png").write_bytes(b"x")
    found = iter_image_paths([tmp_path], outdir=tmp_path,
                             is_output=lambda name: name.endswith("_res.png"))
    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.TIFF"]
