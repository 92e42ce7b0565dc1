"""What the command line can feed a model: images into its one explained input."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.contract import TARGET

if TYPE_CHECKING:
    import onnxruntime as ort


def require_one_input(session: ort.InferenceSession, explained: str, command: str) -> None:
    """Refuses a model that needs inputs besides the explained one (and fg_target): images
    give only that one."""
    others = [i.name for i in session.get_inputs() if i.name not in (explained, TARGET)]
    if others:
        raise FgOnnxError(
            f"{command} cannot supply the model's other input(s) "
            f"{', '.join(repr(name) for name in others)}: it feeds images to {explained!r} "
            "only (run the model fg-onnx augment writes with all its inputs instead)")
