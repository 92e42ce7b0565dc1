"""Which explanation is faithful, and which points at the shape, on the sample model: measures
it with tools/showcase_sample.py and puts the tables and the plot into the docs.

Measures the shipped model on the 6 sample images (with their masks) and on ``--count``
held-out images drawn by the sample model's generator with a seed the model was not trained,
tested or sampled with; copies the perturbation plot to ``docs/images/evaluation.png``;
replaces README.md's faithfulness and localisation tables (between the ``evaluation``
markers) and its before/after tables (between the ``showcase`` markers), where "before" is the
same measurement of an earlier model, saved by ``python tools/showcase_sample.py OLD_MODEL -o
before.json``.

Usage: ``python tools/evaluate_sample.py --before before.json [--count 100] [--no-docs]``
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from showcase_sample import MODEL, measure

from fg_onnx.evaluation.plot import plot
from fg_onnx.vision.overlay import save_png

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "images" / "evaluation.png"
README = ROOT / "README.md"
SECTIONS = ("evaluation", "showcase")


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``<!-- name:start -->`` and ``<!-- name:end -->``
    replaced by ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {start} ... {end} section")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text)


def _pair(before: float, after: float, digits: int = 2) -> str:
    return f"{before:.{digits}f} → **{after:.{digits}f}**"


def _methods(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in found["evaluation"]["results"]}


def localisation_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Per method: held-out mask AUC, pointing game and relevance mass, the shipped samples'
    mask AUC, and the cascading-randomisation Spearman, before → after."""
    old, new = _methods(before), _methods(after)
    lines = ["| method | mask AUC ↑ | pointing game ↑ | relevance mass ↑ | mask AUC, 6 samples ↑ "
             "| Spearman, all layers random ↓ | Spearman, random logit ↓ |",
             "| --- " * 7 + "|"]
    for method in sorted(new, key=lambda m: -new[m]["localisation"]["mask_auc"]):
        a, b = old[method]["localisation"], new[method]["localisation"]
        samples = (before["samples"]["localisation"][method]["mask_auc"],
                   after["samples"]["localisation"][method]["mask_auc"])
        sanity = [found["sanity"]["cascading_last"].get(method) for found in (before, after)]
        other = [found["sanity"]["random_logit"].get(method) for found in (before, after)]
        cells = [_pair(a["mask_auc"], b["mask_auc"], 3),
                 _pair(a["pointing_game"], b["pointing_game"]),
                 _pair(a["relevance_mass"], b["relevance_mass"]), _pair(*samples, 3),
                 "–" if None in sanity else _pair(sanity[0], sanity[1]),
                 "–" if None in other else _pair(other[0], other[1])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def faithfulness_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Per method: the mean pixel-perturbation change over k and the RISE AUCs."""
    old, new = _methods(before), _methods(after)
    lines = ["| method | mean Δf/f over k ↓ | deletion AUC ↓ | insertion AUC ↑ |",
             "| --- | --- | --- | --- |"]

    def mean(row: dict[str, Any]) -> float:
        return float(sum(row["perturbation"]) / len(row["perturbation"]))

    for method in sorted(new, key=lambda m: mean(new[m])):
        a, b = old[method], new[method]
        lines.append(f"| {method} | {_pair(mean(a), mean(b), 3)} | "
                     f"{_pair(a['deletion_auc'], b['deletion_auc'], 3)} | "
                     f"{_pair(a['insertion_auc'], b['insertion_auc'], 3)} |")
    return lines


def samples_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """FullGrad on each shipped sample image."""
    lines = ["| image | FullGrad's peak on the shape | mean inside / outside | top-10 % pixels "
             "on the shape | shape's area |", "| --- | --- | --- | --- | --- |"]
    for name, a, b in zip(after["samples"]["names"], before["samples"]["per_image"],
                          after["samples"]["per_image"], strict=True):
        peak = f"{'yes' if a['peak_on_shape'] else 'no'} → **" \
               f"{'yes' if b['peak_on_shape'] else 'no'}**"
        lines.append(f"| `{name}` | {peak} | "
                     f"{_pair(a['inside_over_outside'], b['inside_over_outside'], 1)} | "
                     f"{_pair(100 * a['top10_on_shape'], 100 * b['top10_on_shape'], 0)} % | "
                     f"{100 * b['shape_area']:.0f} % |")
    return lines


def diagnosis_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Does the model use the background, and which terms of FullGrad carry the heat."""
    lines = ["| held-out measurement | before | after |", "| --- | --- | --- |"]
    for group in ("background", "attribution"):
        for key, value in after[group].items():
            lines.append(f"| {key} | {before[group][key]:.3f} | {value:.3f} |")
    lines += ["", "| FullGrad term (resolution) | share of the map, before → after | "
              "its mass on the shape | its mask AUC |", "| --- | --- | --- | --- |"]
    for a, b in zip(before["terms"], after["terms"], strict=True):
        lines.append(f"| {b['term']} ({b['resolution']}²) | "
                     f"{_pair(a['share_of_map'], b['share_of_map'], 3)} | "
                     f"{_pair(a['mass_on_shape'], b['mass_on_shape'])} | "
                     f"{_pair(a['mask_auc'], b['mask_auc'], 3)} |")
    return lines


def showcase_section(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The before/after tables, each with its caption."""
    count, sanity = after["held_out"], after["sanity"]["images"]
    parts = [
        localisation_table(before, after),
        [f"Before → after ({count} held-out images; the 6 shipped samples with their masks; "
         f"Spearman |map| against the original model's map once every layer's weights are "
         f"random, cascading from the output, and of the map of a random other class "
         f"against the explained class's, on {sanity} of the held-out images, in-graph "
         "methods only). Rows: best held-out mask AUC after first."],
        faithfulness_table(before, after),
        ["Pixel perturbation (mean over k of the table above), RISE deletion and insertion, "
         "before → after."],
        samples_table(before, after),
        ["FullGrad on the shipped samples, before (the old images) → after (the new ones)."],
        diagnosis_table(before, after),
        ["Accuracy and the drawn class's logit (median ratio to the image as drawn) with the "
         "background replaced by its mean colour, by another image's background, or with "
         "the shape removed; Σ x·∇x split into the shape's and the background's pixels and "
         "Σ bias·∇bias, as medians of their ratio to the logit (completeness: input part + "
         "bias part = 1); each term of the FullGrad map (ψ, summed over channels, "
         "resized) with its share of the map's total, its share of its own mass inside the "
         "shape, and its mask AUC."],
    ]
    return "\n".join("\n".join(p) + "\n" for p in parts)


def main() -> None:
    """Measures, and updates the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True,
                        help="tools/showcase_sample.py's JSON for the earlier model")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--no-docs", action="store_true", help="only print the tables")
    parser.add_argument("-o", "--output", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    before = json.loads(args.before.read_text(encoding="utf-8"))
    after, evaluation = measure(MODEL, args.count)
    showcase = showcase_section(before, after)
    if args.output:
        args.output.write_text(json.dumps(after, indent=1), encoding="utf-8")
    if args.no_docs:
        print(after["evaluation_markdown"] + "\n" + showcase)
        return
    save_png(PLOT, plot(evaluation))
    text = README.read_text(encoding="utf-8")
    text = replace_section(text, "evaluation", after["evaluation_markdown"])
    README.write_text(replace_section(text, "showcase", showcase), encoding="utf-8")
    print(f"updated {PLOT.relative_to(ROOT)} and README.md")


if __name__ == "__main__":
    main()
