"""A plain PyTorch FullGrad (Srinivas & Fleuret, 2019), the yardstick for fg-onnx.

It re-implements the authors' code (github.com/idiap/fullgrad-saliency, read at 7c106b3):

- ``saliency/tensor_extractor.py``: every Conv2d, Linear and BatchNorm2d with a bias is a bias
  layer; a BatchNorm's bias is its implicit one, β − μγ/√(σ²+ε) (a BatchNorm is one tap of its
  own, also where a biased Conv2d feeds it: then both are taps); the gradient taken is
  ∂score/∂(layer output).
- ``saliency/fullgrad.py``: each bias term is bias · ∂score/∂output per channel; ψ (their
  ``_postProcess``) is abs, minus the per-sample min, over the per-sample max + 1e-6; the map
  is ψ(x · ∂score/∂x) summed over channels plus, for every rank-4 term (Linear's rank-2 ones
  are left out), ψ(term) resized bilinearly with align_corners=True to the input size and
  summed over channels. The score is the target's logit (their nll_loss · −1), the arg-max
  class by default.

Two differences, neither changing the map where the authors' code works: the authors pair the
gradients a module backward hook collects, reversed, with the biases in module order, which
holds only where the backward pass visits the layers in exactly reverse module order; here each
gradient comes from a tensor hook on its own layer's output. And the model is copied with
in-place activations switched off. Checked against the authors' code itself (not part of this
repository) on torchvision ResNet-18 and VGG-11-BN, with and without conv biases, at 64x64:
max relative difference 2.7e-7 to 4.4e-7.

Used by ``tests/fullgrad/test_augment.py``, ``tests/fullgrad/test_reference_parity.py``
(parity) and ``tools/bench.py`` (timing).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPSILON = 1e-6
BIASED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
CHUNK_BYTES = 256 * 2**20


def _bias_of(module: nn.Module) -> torch.Tensor | None:
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            return None
        std = torch.sqrt(module.running_var + module.eps)
        weight = module.weight if module.weight is not None else torch.ones_like(std)
        bias = module.bias if module.bias is not None else torch.zeros_like(std)
        return (bias - module.running_mean * weight / std).detach()
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach()


def _psi(t: torch.Tensor) -> torch.Tensor:
    """Per-sample abs, shift to min 0, scale to max ~1."""
    t = t.abs()
    view = (-1,) + (1,) * (t.dim() - 1)
    t = t - t.flatten(1).min(1).values.view(view)
    return t / (t.flatten(1).max(1).values.view(view) + EPSILON)


class ReferenceFullGrad:
    """FullGrad of a torch image classifier ([N, C, H, W] in, [N, K] logits out).

    The model is copied: in-place activations would otherwise overwrite the hooked outputs
    between the forward and the backward pass, so they are switched off on the copy.
    """

    def __init__(self, model: nn.Module) -> None:
        """Copies ``model`` (eval mode) and hooks its bias-carrying modules."""
        self.model = copy.deepcopy(model).eval()
        for module in self.model.modules():
            if getattr(module, "inplace", False):
                module.inplace = False  # type: ignore[assignment]
        self._terms: list[torch.Tensor] = []
        for module in self.model.modules():
            if isinstance(module, BIASED) and _bias_of(module) is not None:
                module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        bias = _bias_of(module)
        assert bias is not None
        # Conv/BN biases run along the channel axis 1, Linear's along the last axis.
        rank = output.dim()
        if isinstance(module, nn.Linear):
            shape = (1,) * (rank - 1) + (-1,)
        else:
            shape = (1, -1) + (1,) * (rank - 2)
        bias = bias.view(shape)
        output.register_hook(lambda g: self._terms.append(g * bias))

    def __call__(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """[N, H, W] maps for ``x``; ``target`` [N] classes (None or -1: the arg-max)."""
        self._terms = []
        image = x.detach().clone().requires_grad_(True)
        logits = self.model(image)
        predicted = logits.argmax(1)
        used = predicted if target is None else torch.where(target < 0, predicted, target)
        logits.gather(1, used[:, None]).sum().backward()
        assert image.grad is not None
        size = (int(x.shape[2]), int(x.shape[3]))
        with torch.no_grad():
            cam = _psi(image.grad * image).sum(1)
            for term in self._terms:
                if term.dim() == 4:
                    cam += _resized_channel_sum(_psi(term), size)
        self._terms = []
        return cam


def _resized_channel_sum(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Σ_c resize(t[:, c]) as the paper computes it (every channel resized), in channel chunks
    so the resized temporary stays near CHUNK_BYTES (ResNet-50's 2048-channel 7x7 taps would
    need 6.6 GB at batch 16 otherwise)."""
    per_channel = t.shape[0] * size[0] * size[1] * t.element_size()
    step = max(1, CHUNK_BYTES // per_channel)
    total = torch.zeros((t.shape[0], *size), dtype=t.dtype, device=t.device)
    for start in range(0, t.shape[1], step):
        chunk = t[:, start:start + step]
        total += F.interpolate(chunk, size=size, mode="bilinear", align_corners=True).sum(1)
    return total


def reference_fullgrad(model: nn.Module, x: np.ndarray,
                       target: np.ndarray | None = None) -> np.ndarray:
    """FullGrad maps [N, H, W] of float32 images ``x`` (CPU) for classes ``target``."""
    classes = None if target is None else torch.from_numpy(np.asarray(target, dtype=np.int64))
    maps = ReferenceFullGrad(model)(torch.from_numpy(np.ascontiguousarray(x)), classes)
    return maps.detach().numpy()
