"""``explain``'s summary: one row per explained image, written as summary.json and
summary.csv (the same rows whichever engine ran)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from fg_onnx.files import write_bytes_atomic
from fg_onnx.targets.base import LABELS_KEY, labels_of

__all__ = ["LABELS_KEY", "Row", "labels_of", "summary_row", "write_summary"]

SUMMARY_FIELDS = ("file", "target", "target_label", "score", "predicted", "predicted_label",
                  "completeness_error", "finite", "overlay", "map")

Row = dict[str, object]


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


def target_row(source: Path, overlay: Path | None, saliency_map: Path | None, *, task: str,
               score: float | None, completeness_error: float | None, finite: bool,
               fields: dict[str, object]) -> Row:
    """One target's row: today's fields (``target``, ``target_label``, ``predicted`` where
    the task has them), the task and what it adds (box, pixels, text, ...); a row without a
    map (``note``: why the image has no target) has empty overlay, map and score."""
    row: Row = {"file": str(source), "task": task}
    row.update({key: fields.get(key) for key in ("target", "target_label", "predicted",
                                                  "predicted_label")})
    row.update(score=None if score is None else _number(score),
               completeness_error=None if completeness_error is None
               else _number(completeness_error),
               finite=finite, overlay=overlay.name if overlay else None,
               map=saliency_map.name if saliency_map else None)
    row.update({key: value for key, value in fields.items() if key not in row})
    return row


def _number(value: float) -> float | None:
    """A float for the summary; None (JSON null) for NaN/Inf, which JSON cannot hold."""
    number = float(value)
    return number if np.isfinite(number) else None


def _label(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else ""


def write_summary(outdir: Path, rows: list[Row]) -> None:
    """summary.json and summary.csv (None: JSON null, an empty CSV cell); the CSV has
    today's columns, then those of target rows (task, box, pixels, text, ...)."""
    write_bytes_atomic(outdir / "summary.json", json.dumps(rows, indent=2).encode())
    text = io.StringIO()
    extra = [key for key in dict.fromkeys(k for row in rows for k in row)
             if key not in SUMMARY_FIELDS]
    writer = csv.DictWriter(text, fieldnames=[*SUMMARY_FIELDS, *extra])
    writer.writeheader()
    # Lists (a box, a time-step range) as JSON in their cell, as summary.json has them.
    writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
                     for row in rows)
    write_bytes_atomic(outdir / "summary.csv", text.getvalue().encode())
