"""Atomic file writes: readers see the old file or the complete new one, never half of it."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

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


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, then renames it over
    ``path``; an interrupted write leaves no temporary file behind.

    Raises:
        FgOnnxError: the file cannot be written (missing folder, no space, ...).
    """
    target = Path(path)
    # open(..., "x") keeps the usual umask permissions, unlike mkstemp's private 0600.
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FgOnnxError(f"could not write {target}: {exc.strerror or exc}") from exc
        raise


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through :func:`write_bytes_atomic`."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())
