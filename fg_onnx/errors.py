"""Exceptions raised by fg-onnx.

Every error a user can cause derives from :class:`FgOnnxError`; its message is one line that says
what is wrong and, where possible, what to do about it. The CLI prints it and exits non-zero.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable


class FgOnnxError(Exception):
    """Base class of all user-facing fg-onnx errors."""


class ModelLoadError(FgOnnxError):
    """The model file cannot be read or is not a valid ONNX model."""


class UnsupportedModelError(FgOnnxError):
    """The model is valid ONNX but uses something fg-onnx cannot differentiate or explain."""


class UnsupportedOpsError(UnsupportedModelError):
    """Some nodes on the gradient path have no VJP rule."""

    def __init__(self, missing: Iterable[tuple[str, str, str, int]]) -> None:
        """Builds the message from ``(domain, op_type, node_name, opset)`` entries."""
        self.missing = sorted(set(missing))
        by_type: dict[str, list[str]] = {}
        for domain, op_type, node_name, opset in self.missing:
            key = f"{domain + '::' if domain else ''}{op_type} (opset {opset})"
            by_type.setdefault(key, []).append(node_name or "<unnamed>")
        parts = []
        for key, nodes in sorted(by_type.items()):
            shown = ", ".join(nodes[:3]) + (f", +{len(nodes) - 3} more" if len(nodes) > 3 else "")
            parts.append(f"{key} at node {shown}")
        hints = [hint for matches, hint in EXPORT_HINTS
                 if any(matches(domain, op_type) for domain, op_type, _, _ in self.missing)]
        super().__init__(
            f"no gradient rule for {len(by_type)} op type(s) on the gradient path: "
            + "; ".join(parts)
            + " (see docs/supported_ops.md)"
            + "".join(f"; {hint}" for hint in hints)
        )


CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

EXPORT_HINTS: tuple[tuple[Callable[[str, str], bool], str], ...] = (
    (lambda domain, op: domain.startswith("com.microsoft"),
     "com.microsoft ops come from onnxruntime's offline optimiser: save the model with "
     "graph_optimization_level ORT_ENABLE_BASIC or lower, or export it again"),
    (lambda domain, op: domain in ("", "ai.onnx") and op in CONTROL_FLOW_OPS,
     "control flow is differentiated only where its condition and trip count fold to "
     "constants: fix the input size (--input-size) where they depend on it, or export with "
     "static control flow (torch.jit.trace or the dynamo exporter rather than "
     "torch.jit.script)"),
)
"""What to export instead, for the unsupported ops an export choice produces."""


class GraphBuildError(FgOnnxError):
    """A gradient rule could not be applied to a node (for example an unknown dynamic shape)."""


class OutputExistsError(FgOnnxError):
    """Refusing to overwrite an existing file."""


class ImageError(FgOnnxError):
    """An image file is missing, unreadable, corrupt, unsupported or too large."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line for the user: its first paragraph (onnx wraps long
    messages over several lines; onnxruntime and others append details after a blank line or
    a traceback), whitespace collapsed, shortened to ``limit``; the type name when empty."""
    paragraph = re.split(r"\n\s*\n|\n(?:Traceback |Stacktrace:)", str(exc).strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
