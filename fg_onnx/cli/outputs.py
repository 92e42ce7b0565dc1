"""What ``explain`` and ``evaluate`` write, by name: the per-image files and the recognition of
earlier results (so that a second run does not explain the first one's images)."""

from __future__ import annotations

from pathlib import Path

from fg_onnx.methods import METHOD_NAMES

EVALUATION_FILES = ("evaluation.md", "evaluation.json", "evaluation.png")


def is_result_name(name: str) -> bool:
    """Whether ``name`` is that of an image explain or evaluate writes (with any method)."""
    return name == "evaluation.png" or any(name.endswith(f"_{method}.png")
                                           for method in METHOD_NAMES)


def outputs_of(outdir: Path, stem: str, method: str) -> tuple[Path, Path]:
    """The overlay and the map ``explain`` writes for the image given ``stem``."""
    # Not with_suffix: a stem like "x.y" would lose ".y_<method>" to it.
    return outdir / f"{stem}_{method}.png", outdir / f"{stem}_{method}.npy"
