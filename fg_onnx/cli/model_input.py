"""What the command line can feed a model: readable images into its one explained input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.fullgrad.contract import GRAD_OUTPUT, TARGET
from fg_onnx.vision.images import load_image

if TYPE_CHECKING:
    import onnxruntime as ort


def require_one_input(session: ort.InferenceSession, explained: str, command: str) -> None:
    """Refuses a model that needs inputs besides the explained one (and fg_target or
    fg_grad_output, which the run feeds): images give only that one."""
    others = [i.name for i in session.get_inputs()
              if i.name not in (explained, TARGET, GRAD_OUTPUT)]
    if others:
        raise FgOnnxError(
            f"{command} cannot supply the model's other input(s) "
            f"{', '.join(repr(name) for name in others)}: it feeds images to {explained!r} "
            "only (run the model fg-onnx augment writes with all its inputs instead)")


def readable_images(paths: list[Path]) -> tuple[list[Path], list[npt.NDArray[np.uint8]]]:
    """The images that can be read and their paths, as explain skips the others: one line
    each."""
    read, images = [], []
    for path in paths:
        try:
            images.append(load_image(path))
            read.append(path)
        except ImageError as exc:
            print(f"fg-onnx: skipped: {exc}", file=sys.stderr)
    if not images:
        raise FgOnnxError("none of the images could be read")
    return read, images
