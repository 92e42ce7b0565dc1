"""Settings of the methods that combine several runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fg_onnx.errors import FgOnnxError


@dataclass(frozen=True)
class MethodParams:
    """Settings of the methods that combine several runs."""

    samples: int = 25
    """Noisy copies per image (smoothgrad, smooth-fullgrad)."""
    noise: float = 0.15
    """Noise σ as a fraction of each image's value range (max − min), as in the paper code."""
    steps: int = 32
    """Path steps of integrated gradients (midpoint rule)."""
    seed: int = 0
    """Seed of the noise."""

    def __post_init__(self) -> None:
        """Rejects settings that cannot give a map."""
        if self.samples < 1:
            raise FgOnnxError(f"--samples must be at least 1, got {self.samples}")
        if self.steps < 1:
            raise FgOnnxError(f"--steps must be at least 1, got {self.steps}")
        if not np.isfinite(self.noise) or self.noise < 0:
            raise FgOnnxError(f"--noise must be a number >= 0, got {self.noise}")
