"""Splitting a batch into the runs an onnxruntime session takes.

Most exports have a dynamic batch dimension: a batch runs in chunks of the requested size,
each a view of the batch. Model-zoo exports often fix it (``[1, 3, H, W]``); onnxruntime then
refuses any other row count, so such a model runs in chunks of exactly its batch size, the last
one padded by repeating its last row, and the padded rows' outputs are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fg_onnx.errors import FgOnnxError

Execute = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
"""One session run: feeds (rows along axis 0) -> outputs."""


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of at most ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def copy_chunks(images: int, copies: int, limit: int) -> Iterator[tuple[slice, slice]]:
    """(images, copies) blocks for methods that run ``copies`` variants of each image, at most
    ``limit`` variants per block: whole images while one image's copies fit, else one image's
    copies in pieces (so that memory stays bounded whatever ``copies``)."""
    if copies <= limit:
        for part in chunks(images, limit // copies):
            yield part, slice(0, copies)
        return
    for image in range(images):
        for piece in chunks(copies, limit):
            yield slice(image, image + 1), piece


def fixed_batch(shape: Sequence[int | str | None]) -> int | None:
    """The batch size an input shape (onnxruntime's ``NodeArg.shape``) fixes, or None when
    its leading dimension is symbolic or unknown.

    A leading 0 counts as not fixed: no row count fits it, and onnxruntime's own error says so.
    """
    if not shape:
        return None
    first = shape[0]
    return first if isinstance(first, int) and first >= 1 else None


@dataclass(frozen=True)
class Batches:
    """How many rows each session run gets.

    Attributes:
        size: rows per run: the model's fixed batch size, else the requested one.
        fixed: the model takes exactly ``size`` rows per run.
    """

    size: int
    fixed: bool = False

    @classmethod
    def for_input(cls, shape: Sequence[int | str | None], requested: int) -> Batches:
        """Runs for a session whose batched input has ``shape``; ``requested`` rows per run
        unless the shape fixes the batch size.

        Raises:
            FgOnnxError: ``requested`` is below 1.
        """
        if requested < 1:
            raise FgOnnxError(f"batch size must be at least 1, got {requested}")
        fixed = fixed_batch(shape)
        return cls(fixed, True) if fixed is not None else cls(requested)

    def slices(self, n: int) -> Iterator[slice]:
        """The chunks of ``range(n)``, one per run."""
        return chunks(n, self.size)

    def run(self, execute: Execute, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """``execute(feeds)`` for one chunk (at most ``size`` rows), padded to ``size`` rows
        when the model fixes the batch; the outputs hold the chunk's rows only."""
        rows = len(next(iter(feeds.values())))
        if not self.fixed or rows == self.size:
            return execute(dict(feeds))
        padded = {name: _pad(value, self.size) for name, value in feeds.items()}
        # Outputs without the batch axis (a model that squeezes it) are left as they are.
        return [out[:rows] if out.ndim and len(out) == self.size else out
                for out in execute(padded)]


def _pad(value: np.ndarray, rows: int) -> np.ndarray:
    """``value`` with its last row repeated up to ``rows`` rows: real data, so the padded rows
    cannot overflow or divide by zero where an image would not."""
    extra = np.repeat(value[-1:], rows - len(value), axis=0)
    return np.ascontiguousarray(np.concatenate([value, extra]))
