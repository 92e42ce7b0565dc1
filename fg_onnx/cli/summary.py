"""``explain``'s summary: one row per explained image, written as summary.json and
summary.csv (the same rows whichever engine ran)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from fg_onnx.files import write_bytes_atomic

LABELS_KEY = "fg_onnx.labels"
"""Model metadata: the class names as a JSON list, in output order."""
SUMMARY_FIELDS = ("file", "target", "target_label", "score", "predicted", "predicted_label",
                  "completeness_error", "finite", "overlay", "map")

Row = dict[str, object]


def labels_of(metadata: dict[str, str]) -> list[str]:
    """The class names a model's metadata holds (none when absent or damaged)."""
    try:
        labels = json.loads(metadata.get(LABELS_KEY, "[]"))
    except json.JSONDecodeError:
        return []
    return [str(v) for v in labels] if isinstance(labels, list) else []


def summary_row(source: Path, overlay: Path, saliency_map: Path, labels: list[str], *,
                target: int, score: float, predicted: int,
                completeness_error: float | None, finite: bool) -> Row:
    """One image's row; ``completeness_error`` is None for methods without one."""
    return {
        "file": str(source), "target": target, "target_label": _label(labels, target),
        "score": _number(score), "predicted": predicted,
        "predicted_label": _label(labels, predicted),
        "completeness_error": None if completeness_error is None else _number(
            completeness_error),
        "finite": finite, "overlay": overlay.name, "map": saliency_map.name,
    }


def _number(value: float) -> float | None:
    """A float for the summary; None (JSON null) for NaN/Inf, which JSON cannot hold."""
    number = float(value)
    return number if np.isfinite(number) else None


def _label(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else ""


def write_summary(outdir: Path, rows: list[Row]) -> None:
    """summary.json and summary.csv (None: JSON null, an empty CSV cell)."""
    write_bytes_atomic(outdir / "summary.json", json.dumps(rows, indent=2).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(outdir / "summary.csv", text.getvalue().encode())
