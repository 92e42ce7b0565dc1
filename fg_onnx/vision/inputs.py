"""Image files (or RGB arrays) to the batch a model takes, as ``fg-onnx explain`` builds it:
the model's metadata decides size, normalisation and channels unless given."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fg_onnx.vision.images import load_image
from fg_onnx.vision.preprocess import (
    ModelFacts,
    Preprocess,
    Values,
    model_preprocess,
    preprocess_batch,
)


def load_batch(images: Sequence[str | os.PathLike[str] | npt.NDArray[np.uint8]],
               model: ModelFacts | None = None, *, preprocess: Preprocess | None = None,
               size: tuple[int, int] | None = None, preset: str | None = None,
               mean: Values | None = None, std: Values | None = None,
               bgr: bool = False) -> npt.NDArray[np.float32]:
    """The float32 batch for ``FullGrad(...).explain`` or ``Explainer(...).explain``.

    Args:
        images: image files (read as ``explain`` reads them) or RGB uint8 HxWx3 arrays.
        model: a ``FullGrad`` (``Explainer.session`` for an Explainer) whose input size,
            layout, channels and ``fg_onnx.preprocess`` metadata are used; or None with
            ``preprocess``.
        preprocess: an explicit transform instead (``fg_onnx.vision.preset(...)``).
        size, preset, mean, std, bgr: replace what the model's metadata says, as ``--size``,
            ``--preset``, ``--mean``, ``--std`` and ``--bgr`` do.

    Raises:
        ImageError: a file cannot be read.
        FgOnnxError: the options contradict the model (a size it does not take, ...).
    """
    if preprocess is None:
        if model is None:
            raise ValueError("load_batch needs a model (its metadata) or a preprocess")
        preprocess = model_preprocess(model, size=size, preset_name=preset, mean=mean,
                                      std=std, bgr=bgr)
    pixels = [image if isinstance(image, np.ndarray) else load_image(image) for image in images]
    return preprocess_batch(pixels, preprocess)
