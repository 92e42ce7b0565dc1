"""Atomic file writes: readers see the old file or the complete new one, never half of it."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import numpy as np


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, then renames it over
    ``path``; an interrupted write leaves no temporary file behind."""
    target = Path(path)
    # open(..., "x") keeps the usual umask permissions, unlike mkstemp's private 0600.
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through :func:`write_bytes_atomic`."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())
