"""What ``explain`` and ``evaluate`` put in their report.html (see fg_onnx.report.html)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fg_onnx import __version__
from fg_onnx.cli.outputs import EVALUATION_FILES
from fg_onnx.cli.summary import Row
from fg_onnx.evaluation import RANDOM, Evaluation
from fg_onnx.report.html import (
    REPORT_NAME,
    Cell,
    Column,
    Image,
    Link,
    figure,
    links,
    paragraph,
    table,
    write_page,
)

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
               Column("deletion_auc", "deletion AUC", "number", digits=3),
               Column("ms", "ms / image", "number", digits=3)]
    rows: list[dict[str, Cell]] = []
    for method in result.results:
        row: dict[str, Cell] = {"method": method.method, "deletion_auc": method.deletion_auc,
                                "ms": None if method.method == RANDOM
                                else 1000 * method.seconds_per_image}
        row.update({f"k{i}": value for i, value in enumerate(method.perturbation)})
        rows.append(row)
    about = (f"{result.images} image(s); model {model.name}; fg-onnx {__version__}. "
             "Columns k: mean |f(x') − f(x)| / |f(x)| of the explained logit after replacing "
             f"the k % least salient pixels by the {result.fill} (lower is better). "
             "Deletion AUC: area under f(x_t) / f(x) as the most salient pixels are removed "
             "first (lower is better). Click a column head to sort.")
    write_page(outdir / REPORT_NAME, f"fg-onnx evaluate: {model.name}", [
        paragraph(about), links(list(EVALUATION_FILES)), table(columns, rows),
        figure("evaluation.png", "pixel perturbation and deletion curves")])
