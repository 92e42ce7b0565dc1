"""Integrated gradients (Sundararajan et al., 2017) from a zero baseline.

IG = (x − x') ⊙ mean_k ∇f(x' + α_k (x − x')) with midpoint steps α_k = (k + ½)/m, all m steps
of a chunk of images run as one batch of size images · m. The map is Σ_c |IG_c|. Its own
completeness check, Σ IG ≈ f(x) − f(x'), replaces FullGrad's in ``completeness_error``:
|Σ IG − (f(x) − f(x'))| / max(|f(x) − f(x')|, 1e-6). The baseline is the zero input, which
after mean/std normalisation is the data set's mean colour.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fg_onnx.choices import channel_axis
from fg_onnx.fullgrad import contract
from fg_onnx.methods.params import MethodParams
from fg_onnx.runtime.batching import copy_chunks
from fg_onnx.runtime.session import Explanation, FullGrad

STEPS_PER_CHUNK = 256
"""Path points held in memory at once (at least one image's worth)."""


def integrated_gradients(session: FullGrad, batch: np.ndarray, clean: Explanation,
                         params: MethodParams) -> Explanation:
    """``clean`` with the IG map and IG's completeness error."""
    baseline = np.zeros_like(batch)
    alphas = ((np.arange(params.steps) + 0.5) / params.steps).astype(np.float32)
    alphas = alphas.reshape(1, -1, *([1] * (batch.ndim - 1)))
    grad_sums = np.zeros(batch.shape, np.float64)
    for part, piece in copy_chunks(len(batch), params.steps, STEPS_PER_CHUNK):
        x, x0, steps = batch[part], baseline[part], alphas[:, piece]
        path = (x0[:, None] + steps * (x - x0)[:, None]).reshape(-1, *batch.shape[1:])
        targets = np.repeat(clean.targets[part], steps.shape[1])
        grads = session.outputs(path, targets, [contract.INPUT_GRAD])[contract.INPUT_GRAD]
        grad_sums[part] += grads.reshape(len(x), steps.shape[1], *batch.shape[1:]).sum(1)
    attributions = ((batch - baseline) * (grad_sums / params.steps)).astype(batch.dtype)
    base_scores = session.outputs(baseline, clean.targets, [contract.SCORE])[contract.SCORE]
    gap = clean.scores - base_scores
    total = attributions.reshape(len(batch), -1).sum(1)
    error = np.abs(total - gap) / np.maximum(np.abs(gap), 1e-6)
    saliency = np.abs(attributions).sum(channel_axis(session.layout))
    return dataclasses.replace(clean, saliency=saliency.astype(np.float32),
                               completeness_error=error.astype(np.float32))
