"""What ``explain`` and ``evaluate`` put in their report.html (see fg_onnx.report.html)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fg_onnx import __version__
from fg_onnx.cli.outputs import EVALUATION_FILES, SANITY_FILES
from fg_onnx.evaluation import RANDOM, Evaluation
from fg_onnx.evaluation.sanity import Sanity, SanityStep
from fg_onnx.report.html import (
    REPORT_NAME,
    Cell,
    Column,
    Image,
    Link,
    figure,
    heading,
    links,
    paragraph,
    table,
    write_page,
)
from fg_onnx.summary import Row

EXPLAIN_COLUMNS = (
    Column("index", "#", "number"),
    Column("image", "image", "none"),
    Column("overlay", "overlay", "none"),
    Column("file", "file"),
    Column("target", "target", "number"),
    Column("target_label", "target label"),
    Column("score", "score", "number"),
    Column("predicted", "predicted", "number"),
    Column("predicted_label", "predicted label"),
    Column("completeness_error", "completeness error", "number", digits=3),
    Column("finite", "finite"),
    Column("map", "map (.npy)"),
)


def write_explain_report(outdir: Path, rows: Sequence[Row], thumbnails: Sequence[bytes], *,
                         model: Path, method: str, skipped: int) -> None:
    """report.html of an explain run: one table row per image, sortable."""
    cells: list[dict[str, Cell]] = []
    for index, (row, thumbnail) in enumerate(zip(rows, thumbnails, strict=True)):
        overlay, saliency_map = str(row["overlay"]), str(row["map"])
        cell: dict[str, Cell] = {key: row[key] for key in  # type: ignore[misc]
                                 ("file", "target", "target_label", "score", "predicted",
                                  "predicted_label", "completeness_error", "finite")}
        cell.update(index=index + 1, map=Link(saliency_map, saliency_map),
                    image=Image(f"input {row['file']}", data=thumbnail or None),
                    overlay=Image(f"{method} overlay of {row['file']}", src=overlay,
                                  href=overlay))
        cells.append(cell)
    about = (f"{len(rows)} image(s) explained with {method}"
             + (f", {skipped} skipped (unreadable)" if skipped else "")
             + f"; model {model.name}; fg-onnx {__version__}. Overlays are at each image's "
               "size, the .npy maps at the model's input size unless --map-size image. "
               "Click a column head to sort.")
    write_page(outdir / REPORT_NAME, f"fg-onnx explain: {model.name}", [
        paragraph(about), links(["summary.json", "summary.csv"]),
        table(EXPLAIN_COLUMNS, cells)])


def write_evaluation_report(outdir: Path, result: Evaluation, *, model: Path) -> None:
    """report.html of an evaluate run: the table (sortable) and the plot."""
    columns = [Column("method", "method"),
               *(Column(f"k{i}", f"{k:g} %", "number") for i, k in enumerate(result.ks)),
               Column("deletion_auc", "deletion AUC ↓", "number", digits=3),
               Column("insertion_auc", "insertion AUC ↑", "number", digits=3),
               Column("ms", "ms / image", "number", digits=3)]
    rows: list[dict[str, Cell]] = []
    for method in result.results:
        row: dict[str, Cell] = {"method": method.method, "deletion_auc": method.deletion_auc,
                                "insertion_auc": method.insertion_auc,
                                "ms": None if method.method == RANDOM
                                else 1000 * method.seconds_per_image}
        row.update({f"k{i}": value for i, value in enumerate(method.perturbation)})
        rows.append(row)
    about = (f"{result.images} image(s); model {model.name}; fg-onnx {__version__}. "
             "Columns k: mean |f(x') − f(x)| / |f(x)| of the explained logit after replacing "
             f"the k % least salient pixels by the {result.fill} (lower is better). "
             "Deletion and insertion AUC (RISE): area under the explained class's probability "
             "as the most salient pixels are removed first, or put back first into a blurred "
             "copy; both in [0, 1]. Click a column head to sort.")
    write_page(outdir / REPORT_NAME, f"fg-onnx evaluate: {model.name}", [
        paragraph(about), links(list(EVALUATION_FILES)), table(columns, rows),
        *_localisation_sections(result),
        figure("evaluation.png", "pixel perturbation, deletion and insertion curves")])


LOCALISATION_COLUMNS = (
    Column("method", "method"),
    Column("pointing_game", "pointing game ↑", "number", digits=3),
    Column("relevance_mass", "relevance mass ↑", "number", digits=3),
    Column("relevance_rank", "relevance rank ↑", "number", digits=3),
    Column("mask_auc", "mask AUC ↑", "number", digits=3),
)


def _localisation_sections(result: Evaluation) -> list[str]:
    found = [(r.method, r.localisation) for r in result.results if r.localisation is not None]
    if not found:
        return []
    rows: list[dict[str, Cell]] = [
        {"method": method, "pointing_game": loc.pointing_game,
         "relevance_mass": loc.relevance_mass, "relevance_rank": loc.relevance_rank,
         "mask_auc": loc.mask_auc} for method, loc in found]
    return [heading("Localisation"),
            paragraph(f"On the {found[0][1].images} image(s) with a non-empty mask."),
            table(LOCALISATION_COLUMNS, rows)]


def write_sanity_report(outdir: Path, sanity: Sanity, *, model: Path) -> None:
    """report.html of a sanity run: the cascading and independent tables, the plot, the grid."""
    def steps_table(steps: Sequence[SanityStep], label: str) -> str:
        columns = [Column("method", "method"),
                   *(Column(f"s{i}", f"{label} {s.randomised[0]}", "number", digits=2)
                     for i, s in enumerate(steps))]
        rows: list[dict[str, Cell]] = []
        for method in sanity.methods:
            row: dict[str, Cell] = {"method": method}
            row.update({f"s{i}": s.similarity[method].spearman_abs
                        for i, s in enumerate(steps)})
            rows.append(row)
        return table(columns, rows)

    about = (f"{sanity.images} image(s); model {model.name}; fg-onnx {__version__}. Cells: "
             "Spearman rank correlation of |map| with the original model's map (Adebayo et "
             "al., 2018); a method that reflects the weights falls towards 0 as they are "
             "randomised. SSIM and the random-logit test are in sanity.md and sanity.json.")
    write_page(outdir / REPORT_NAME, f"fg-onnx sanity: {model.name}", [
        paragraph(about), links(list(SANITY_FILES)),
        heading("Cascading randomisation (output layer first)"),
        steps_table(sanity.cascading, "to"),
        heading("Independent randomisation (one layer)"),
        steps_table(sanity.independent, ""),
        figure("sanity.png", "Spearman and SSIM against the randomisation depth"),
        figure("sanity_grid.png", "maps of the first image as layers are randomised")])
