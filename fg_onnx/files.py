"""Atomic file writes (readers see the old file or the complete new one, never half of it),
and the names of the per-image files a run writes, whichever engine writes them."""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fg_onnx.errors import FgOnnxError


def make_folder(path: str | os.PathLike[str]) -> None:
    """Creates the folder ``path`` and its parents unless it exists.

    Raises:
        FgOnnxError: it cannot be created (a parent is a file, no permission, ...).
    """
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FgOnnxError(f"cannot create the output folder {path}: "
                          f"{exc.strerror or exc}") from exc


def temp_file_beside(path: Path) -> Path:
    """Creates a new empty file beside ``path`` for an atomic write, with the permissions an
    ordinary write gets (0666 less the umask; mkstemp's are 0600, which would leave the
    result private to its owner).

    Raises:
        OSError: it cannot be created.
    """
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temp, "xb"):
                return temp
        except FileExistsError:
            continue


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, then renames it over
    ``path``; an interrupted write leaves no temporary file behind.

    Raises:
        FgOnnxError: the file cannot be written (missing folder, no space, ...).
    """
    target = Path(path)
    temp: Path | None = None
    try:
        temp = temp_file_beside(target)
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FgOnnxError(f"could not write {target}: {exc.strerror or exc}") from exc
        raise


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through :func:`write_bytes_atomic`."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())


def outputs_of(outdir: Path, stem: str, method: str) -> tuple[Path, Path]:
    """The overlay and the map ``explain`` writes for the image given ``stem``."""
    # Not with_suffix: a stem like "x.y" would lose ".y_<method>" to it.
    return outdir / f"{stem}_{method}.png", outdir / f"{stem}_{method}.npy"


@dataclass(frozen=True)
class FileOutputs:
    """Per-image files, as ``fg-onnx explain`` names them (:func:`outputs_of`): what the
    local run writes, and what Ray workers write (``fg_onnx.ray``).

    ``outdir`` must be reachable by every worker (a shared file system). Files are written
    atomically, so a retried Ray batch rewrites the same files.
    """

    outdir: Path
    method: str = "fullgrad"
    alpha: float = 0.5
    overlays: bool = True
    maps: bool = True
    map_size: Literal["model", "image"] = "model"
    """The .npy maps at the model's input size, or resized to each image's."""
    thumbnails: bool = True
    """Return each image's JPEG thumbnail (for report.html)."""
