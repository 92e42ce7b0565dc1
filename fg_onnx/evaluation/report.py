"""The evaluation as a markdown table and as JSON."""

from __future__ import annotations

import dataclasses
import json

from fg_onnx.evaluation.run import RANDOM, Evaluation


def markdown(evaluation: Evaluation) -> str:
    """A table, one row per method, best first by the pixel-perturbation mean over k."""
    ks = " | ".join(f"{k:g} %" for k in evaluation.ks)
    lines = [
        f"| method | {ks} | deletion AUC | ms / image |",
        "| --- " * (len(evaluation.ks) + 3) + "|",
    ]
    ordered = sorted(evaluation.results,
                     key=lambda r: sum(r.perturbation) / len(r.perturbation))
    for row in ordered:
        cells = " | ".join(f"{v:.4f}" for v in row.perturbation)
        ms = "–" if row.method == RANDOM else f"{1000 * row.seconds_per_image:.1f}"
        lines.append(f"| {row.method} | {cells} | {row.deletion_auc:.3f} | {ms} |")
    lines.append("")
    lines.append(
        f"{evaluation.images} images. Columns k: mean |f(x') − f(x)| / |f(x)| of the explained "
        f"logit after replacing the k % least salient pixels by the {evaluation.fill} "
        "(lower is better). Deletion AUC: area under f(x_t) / f(x) as the most salient "
        "pixels are removed first (lower is better). Rows: best mean over k first."
    )
    return "\n".join(lines) + "\n"


def to_json(evaluation: Evaluation) -> str:
    """Everything measured, including the deletion curves."""
    return json.dumps(dataclasses.asdict(evaluation), indent=2)
