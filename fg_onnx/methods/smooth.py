"""SmoothGrad and smooth FullGrad: the map averaged over noisy copies of each image.

As in the FullGrad paper code (``smooth_fullgrad.py``): σ = noise · (max − min) of the image,
``samples`` Gaussian copies. The class stays the one explained on the clean image (the paper
code lets each noisy copy explain its own arg-max). All copies of a chunk of images run as
one batch of size images · samples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fg_onnx.methods.params import MethodParams
from fg_onnx.runtime.batching import copy_chunks
from fg_onnx.runtime.session import Explanation, FullGrad

COPIES_PER_CHUNK = 256
"""Noisy copies held in memory at once (at least one image's worth)."""


def smooth(session: FullGrad, batch: np.ndarray, clean: Explanation,
           params: MethodParams) -> Explanation:
    """``clean`` with its saliency replaced by the noise-averaged map."""
    rng = np.random.default_rng(params.seed)
    flat = batch.reshape(len(batch), -1)
    sigma = params.noise * (flat.max(1) - flat.min(1)) if len(batch) else flat[:, 0]
    sums = np.zeros(clean.saliency.shape, np.float64)
    for part, piece in copy_chunks(len(batch), params.samples, COPIES_PER_CHUNK):
        images, copies = batch[part], piece.stop - piece.start
        scale = sigma[part].reshape(-1, 1, *([1] * (batch.ndim - 1)))
        noise = rng.standard_normal((len(images), copies, *batch.shape[1:]), dtype=np.float32)
        noisy = (images[:, None] + scale * noise).reshape(-1, *batch.shape[1:])
        targets = np.repeat(clean.targets[part], copies)
        saliency = session.explain(noisy, targets.tolist()).saliency
        sums[part] += saliency.reshape(len(images), copies, *saliency.shape[1:]).sum(1)
    maps = (sums / params.samples).astype(clean.saliency.dtype)
    return dataclasses.replace(clean, saliency=maps)
