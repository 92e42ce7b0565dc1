"""Finding and reading images as RGB uint8 arrays, with one-line errors for bad files.

Decoding conventions:
- grayscale becomes three equal channels;
- an alpha channel is composited on black (``rgb * alpha``), so transparent areas, whose colour
  values are often arbitrary, read as black rather than as hidden colours;
- 16-bit images are scaled to 8 bits (``round(v * 255 / 65535)``); float images (TIFF) are
  taken as 0..1 and clipped;
- JPEG EXIF orientation is applied; other formats are read as stored.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from fg_onnx.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff"}
)
MAX_PIXELS = 100_000_000
"""Images with more pixels are refused: decoding them would take gigabytes of memory."""

ImagePath = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------
# Header sniffing: format and pixel count without decoding


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))  # negative height means top-down rows


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers, not DHT/JPG/DAC


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length field
            pos += 2
            continue
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8 or struct.unpack(order + "H", data[2:4])[0] != 42:
        return None  # BigTIFF (43) and oddities: checked after decoding instead
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    found: dict[int, int] = {}
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(data) - 11), 12):
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth/ImageLength as SHORT or LONG
            fmt = order + ("H" if kind == 3 else "I")
            found[tag] = struct.unpack(fmt, data[entry + 8 : entry + 8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


_FORMATS: tuple[tuple[bytes, str, Callable[[bytes], tuple[int, int] | None]], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG", _png_size),
    (b"\xff\xd8\xff", "JPEG", _jpeg_size),
    (b"BM", "BMP", _bmp_size),
    (b"II*\x00", "TIFF", _tiff_size),
    (b"MM\x00*", "TIFF", _tiff_size),
    (b"II+\x00", "TIFF", _tiff_size),
    (b"MM\x00+", "TIFF", _tiff_size),
)


def sniff(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """The format name and ``(width, height)`` read from the header; None where unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_size(data)
    for magic, name, size_of in _FORMATS:
        if data.startswith(magic):
            try:
                return name, size_of(data)
            except struct.error:  # a header cut short: the decoder reports the file as corrupt
                return name, None
    return None, None


# ---------------------------------------------------------------------------------------------
# Decoding


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silences OpenCV's stderr warnings about corrupt data; the caller raises ImageError."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {path} is {width}x{height} "
            f"({width * height / 1e6:.0f} megapixels, limit {max_pixels / 1e6:.0f})"
        )


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"image path is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError(f"image file is empty: {path}")
    return data


def _to_uint8(pixels: np.ndarray, path: Path) -> npt.NDArray[np.uint8]:
    """8-bit values of a uint8, uint16 or float decoded image."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        wide = pixels.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if pixels.dtype in (np.float32, np.float64):
        scaled = np.clip(np.nan_to_num(pixels.astype(np.float64), nan=0.0), 0.0, 1.0) * 255
        return np.round(scaled).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {pixels.dtype} in {path} (use 8/16-bit or float)")


def _to_rgb(pixels: npt.NDArray[np.uint8], path: Path) -> npt.NDArray[np.uint8]:
    """RGB HxWx3 from gray, gray+alpha, BGR or BGRA."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels in (1, 2):
        colour, alpha = np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]
    elif channels in (3, 4):
        colour, alpha = pixels[..., 2::-1], pixels[..., 3:]
    else:
        raise ImageError(f"unsupported channel count {channels} in {path}")
    if alpha.shape[2]:
        weighted = colour.astype(np.uint32) * alpha.astype(np.uint32)
        colour = ((weighted + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(colour, dtype=np.uint8)


def load_image(path: ImagePath, *, max_pixels: int = MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Reads an image file (JPEG, PNG, BMP, WebP, TIFF, ...) as RGB uint8 ``HxWx3``.

    Bytes are read by Python and decoded from memory, so non-ASCII paths work everywhere.
    See the module docstring for grayscale, alpha, 16-bit and orientation handling.

    Raises:
        ImageError: missing, unreadable, empty, corrupt or unsupported file, or more than
            ``max_pixels`` pixels (checked from the header before decoding where possible).
    """
    file = Path(path)
    data = _read_bytes(file)
    kind, size = sniff(data)
    if size is not None:
        _check_pixels(file, size[0], size[1], max_pixels)
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores EXIF orientation; JPEG has neither
    # alpha nor (in practice) 16 bits, and phone photos rely on the orientation tag.
    flags = cv2.IMREAD_COLOR if kind == "JPEG" else cv2.IMREAD_UNCHANGED
    with _quiet_opencv():
        try:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:
            decoded = None
    if decoded is None or decoded.size == 0:
        what = f"corrupt or truncated {kind} file" if kind else "not a supported image format"
        raise ImageError(f"cannot decode image {file}: {what} (supported: JPEG, PNG, BMP, "
                         "WebP, TIFF)")
    _check_pixels(file, decoded.shape[1], decoded.shape[0], max_pixels)
    return _to_rgb(_to_uint8(decoded, file), file)


# ---------------------------------------------------------------------------------------------
# Finding images


def _walk(directory: Path, seen: set[Path], outdir: Path | None,
          is_output: Callable[[str], bool], root: bool) -> Iterator[Path]:
    """Image files under ``directory`` in sorted order, visiting each real directory once."""
    real = directory.resolve()
    if real == outdir and not root:
        return
    if real in seen:  # a symlink loop or a directory reached twice
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise ImageError(f"cannot list directory {directory}: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.name.startswith("."):  # hidden files, e.g. macOS "._x.jpg" resource forks
            continue
        child = directory / entry.name
        if entry.is_dir():
            yield from _walk(child, seen, outdir, is_output, False)
        elif (entry.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS
              and not (real == outdir and is_output(entry.name))):
            yield child


def iter_image_paths(paths: Iterable[ImagePath], *, outdir: ImagePath | None = None,
                     is_output: Callable[[str], bool] = lambda name: False) -> list[Path]:
    """Expands files and directories into image files, in argument order, without duplicates.

    Files given directly are kept whatever their extension (the decoder decides); directories
    are searched recursively, in name order, for files with an image extension (any case),
    skipping hidden names and following symlinks once per real directory.

    ``outdir`` is where the caller writes its results, which must not come back as images on
    the next run: a search skips it (and all below it) where it meets it inside a given
    directory; where a given directory is ``outdir`` itself, the user chose to keep results
    beside the images, and only the files ``is_output(name)`` recognises are skipped.

    Raises:
        ImageError: some paths do not exist (all are named), a directory cannot be listed, or
            no image was found at all.
    """
    given = [Path(p) for p in paths]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise ImageError(f"not found: {', '.join(missing)}")
    skipped = None if outdir is None else Path(outdir).resolve()
    found: dict[Path, Path] = {}  # real path -> first spelling met, in insertion order
    seen: set[Path] = set()
    for path in given:
        items = _walk(path, seen, skipped, is_output, True) if path.is_dir() else [path]
        for item in items:
            found.setdefault(item.resolve(), item)
    if not found:
        shown = ", ".join(str(p) for p in given) or "(no paths given)"
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageError(f"no image files ({extensions}) found in {shown}")
    return list(found.values())
