"""``Explainer``: any saliency method over one augmented model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.graph.load import ModelSource
from fg_onnx.methods.params import MethodParams
from fg_onnx.methods.registry import get_method
from fg_onnx.runtime.providers import Device
from fg_onnx.runtime.session import Explanation, FullGrad


class Explainer:
    """Explains batches with ``method`` (see METHODS).

    One onnxruntime session over the model augmented for the method's in-graph map; methods
    that combine several runs (smoothgrad, smooth-fullgrad, integrated-gradients) feed it
    their perturbed copies as large batches. ``session`` is that FullGrad session.
    """

    def __init__(self, model: ModelSource, method: str = "fullgrad", *,
                 params: MethodParams | None = None, device: Device = "auto",
                 batch_size: int = 16, options: AugmentOptions | None = None,
                 io_binding: bool | None = None, threads: int | None = None) -> None:
        """Augments ``model`` (unless it already is) for ``method`` and opens the session."""
        self.method = get_method(method)
        self.params = params or MethodParams()
        options = dataclasses.replace(options or AugmentOptions(), method=self.method.graph)
        self.session = FullGrad(model, device=device, batch_size=batch_size, options=options,
                                io_binding=io_binding, threads=threads)

    def explain(self, batch: np.ndarray, targets: int | Sequence[int] | None = None,
                ) -> Explanation:
        """Like :meth:`FullGrad.explain`; the saliency is the method's map. The class of
        each image is fixed on the clean image first, then every copy explains it."""
        clean = self.session.explain(batch, targets)
        if self.method.runner is None or len(clean) == 0:
            return clean
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        result = self.method.runner(self.session, inputs, clean, self.params)
        if self.method.completeness is None:  # the clean image's check says nothing of it
            return dataclasses.replace(result, completeness_error=None)
        return result
