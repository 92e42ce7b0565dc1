"""The evaluation as a markdown table and as JSON."""

from __future__ import annotations

import dataclasses
import json

from fg_onnx.evaluation.run import RANDOM, Evaluation


def markdown(evaluation: Evaluation) -> str:
    """A table, one row per method, best first by the pixel-perturbation mean over k."""
    ks = " | ".join(f"{k:g} %" for k in evaluation.ks)
    lines = [
        f"| method | {ks} | deletion AUC ↓ | insertion AUC ↑ | ms / image |",
        "| --- " * (len(evaluation.ks) + 4) + "|",
    ]
    ordered = sorted(evaluation.results,
                     key=lambda r: sum(r.perturbation) / len(r.perturbation))
    for row in ordered:
        cells = " | ".join(f"{v:.4f}" for v in row.perturbation)
        ms = "–" if row.method == RANDOM else f"{1000 * row.seconds_per_image:.1f}"
        lines.append(f"| {row.method} | {cells} | {row.deletion_auc:.3f} | "
                     f"{row.insertion_auc:.3f} | {ms} |")
    lines.append("")
    lines.append(
        f"{evaluation.images} images. Columns k: mean |f(x') − f(x)| / |f(x)| of the explained "
        f"logit after replacing the k % least salient pixels by the {evaluation.fill} "
        "(lower is better). Deletion and insertion AUC (RISE): area under the explained "
        "class's probability as the most salient pixels are removed first (by the same "
        "fill), or put back first into a blurred copy; both in [0, 1]. Rows: best mean "
        "over k first."
    )
    return "\n".join(lines) + "\n" + localisation_markdown(evaluation)


def localisation_markdown(evaluation: Evaluation) -> str:
    """The localisation table, where masks were given (empty otherwise)."""
    rows = [(r.method, r.localisation) for r in evaluation.results
            if r.localisation is not None]
    if not rows:
        return ""
    lines = ["", "| method | pointing game ↑ | relevance mass ↑ | relevance rank ↑ | "
             "mask AUC ↑ |", "| --- | --- | --- | --- | --- |"]
    for method, found in sorted(rows, key=lambda row: -row[1].mask_auc):
        lines.append(f"| {method} | {found.pointing_game:.3f} | {found.relevance_mass:.3f} | "
                     f"{found.relevance_rank:.3f} | {found.mask_auc:.3f} |")
    lines += ["", f"Localisation on the {rows[0][1].images} images with a non-empty mask: "
              "the share whose map peaks inside the mask, the share of positive saliency "
              "inside it, the share of the mask-sized most salient set inside it, and the "
              "ROC AUC of the map as a detector of mask pixels. Rows: best mask AUC first."]
    return "\n".join(lines) + "\n"


def to_json(evaluation: Evaluation) -> str:
    """Everything measured, including the deletion curves."""
    return json.dumps(dataclasses.asdict(evaluation), indent=2)
