"""report.html: escaped, relative, standalone; in headless Chromium every image loads and the
table sorts (the browser tests skip where no Chromium is installed; CI has one)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import onnx
import pytest
from browser import dump_dom, screenshot

from fg_onnx.cli.main import main
from fg_onnx.report.html import Column, Image, Link, page, relative_url, table

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"
EVIL = "<img src=x onerror=alert(1)>"


class _Page(HTMLParser):
    """The body's attributes, every image's src, and the table's cells by column."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images: list[str] = []
        self.heads: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "tr" and not self._in_head:
            self.rows.append([])
        elif tag == "thead":
            self._in_head = True
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            (self.heads if tag == "th" else self.rows[-1]).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def column(self, title: str) -> list[str]:
        index = self.heads.index(title)
        return [row[index] for row in self.rows]


def _parse(text: str) -> _Page:
    parsed = _Page()
    parsed.feed(text)
    return parsed


def test_every_string_is_escaped_and_links_are_relative() -> None:
    columns = [Column("name", "name <b>"), Column("n", "n", "number"),
               Column("img", "img", "none"), Column("file", "file")]
    text = page(f"title {EVIL}", [table(columns, [
        {"name": EVIL, "n": 1.5, "img": Image(f"alt {EVIL}", src="a b#1.png"),
         "file": Link(f"x{EVIL}", "dir/x\"<.npy")}])])
    assert EVIL not in text and "onerror=alert(1)&gt;" in text
    assert 'src="a%20b%231.png"' in text and 'href="dir/x%22%3C.npy"' in text
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from elsewhere
    for bad in ("/etc/passwd", "../x.png", "https://example.com/x.png"):
        with pytest.raises(ValueError, match="relative paths"):
            relative_url(bad)


def _evil_run(tmp_path: Path) -> Path:
    """explain on images whose names hold markup, with a label that is markup."""
    model = onnx.load(SAMPLE)
    labels = next(p for p in model.metadata_props if p.key == "fg_onnx.labels")
    names = json.loads(labels.value)
    labels.value = json.dumps([EVIL, *names[1:]])
    onnx.save(model, tmp_path / "model.onnx")
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(sorted(IMAGES.iterdir())):
        shutil.copy(image, folder / f"<i>{index} &amp; #{image.name}")
    out = tmp_path / "moved" / "out"
    assert main(["explain", str(tmp_path / "model.onnx"), str(folder), "-o", str(out),
                 "--device", "cpu"]) == 0
    return out


def test_explain_report_in_chromium(tmp_path: Path) -> None:
    first = _evil_run(tmp_path)
    out = tmp_path / "shared"
    shutil.move(first, out)  # relative links: the folder still works elsewhere
    report = out / "report.html"
    rows = json.loads((out / "summary.json").read_text())
    text = dump_dom(report, "?sort=score&order=desc")
    assert 'data-column="score" data-sort="number" tabindex="0" aria-sort="descending"' in text
    dom = _parse(text)
    assert dom.body.get("data-images-loaded") == str(2 * len(rows))  # thumbnail + overlay
    assert dom.body.get("data-images-failed") == "0"
    assert all(src.startswith("data:image/jpeg;base64,") or not src.startswith(("/", "file:"))
               for src in dom.images) and "x" not in dom.images
    assert dom.column("score") == [f"{score:.4g}" for score in sorted(
        (row["score"] for row in rows), reverse=True)]
    assert f"{EVIL}" in dom.column("target label")  # shown as text, not an element
    ascending = _parse(dump_dom(report, "?sort=file"))
    assert ascending.column("file") == sorted(str(row["file"]) for row in rows)
    screenshot(report, tmp_path / "report.png", "?sort=score&order=desc")


def test_clicking_a_column_head_sorts(tmp_path: Path) -> None:
    out = _evil_run(tmp_path)
    # The page's own script, driven by clicks from a script appended to a copy of it.
    clicks = ("<script>var th=[...document.querySelectorAll('th')].find("
              "t=>t.dataset.column==='completeness_error');th.click();"
              "document.body.dataset.first=document.querySelector('tbody tr td').textContent;"
              "th.click();document.body.dataset.second="
              "document.querySelector('tbody tr td').textContent;</script></body>")
    text = (out / "report.html").read_text().replace("</body>", clicks)
    (out / "clicked.html").write_text(text)
    dom = _parse(dump_dom(out / "clicked.html"))
    rows = json.loads((out / "summary.json").read_text())
    errors = [row["completeness_error"] for row in rows]
    smallest = 1 + errors.index(min(errors))
    largest = 1 + errors.index(max(errors))
    assert (dom.body.get("data-first"), dom.body.get("data-second")) == \
        (str(smallest), str(largest))


def test_evaluate_report_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), str(IMAGES / "cross.jpg"),
                 "--methods", "gradient,grad-cam", "--k", "1,10", "--deletion-steps", "2",
                 "-o", str(out), "--device", "cpu"]) == 0
    dom = _parse(dump_dom(out / "report.html", "?sort=deletion_auc&order=desc"))
    assert (dom.body.get("data-images-loaded"), dom.body.get("data-images-failed")) == ("1", "0")
    assert dom.images == ["evaluation.png"]
    results = json.loads((out / "evaluation.json").read_text())["results"]
    by_auc = sorted(results, key=lambda r: r["deletion_auc"], reverse=True)
    assert dom.column("method") == [r["method"] for r in by_auc]
