"""Renders README's task pictures: runs each `fg-onnx explain sample_models/...` example of
README's "### Task targets" section (a ```bash block of one command followed by its picture,
``![...](docs/images/task_<name>.png)``) and tiles the input image beside the overlay of
every target it wrote (box or region outlined by explain), each captioned from its summary
row.

Run from the repository root: ``python tools/task_pictures.py``. tests/test_readme_tasks.py
runs the same commands, parsed by :func:`task_examples`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fg_onnx.cli.main import main as fg_onnx_main
from fg_onnx.vision.images import load_image
from fg_onnx.vision.overlay import save_png

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### Task targets"
TILE = 120
"""The height of a square image's tiles."""
WIDE_TILE = 52
"""The height of a wide image's tiles (rows of shapes), one above the other."""
LEVEL = 8
CAPTION = 15
"""The height of a caption line."""
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLOCK = r"```bash\n(.*?)```[ \t]*\n(?:\s*!\[[^\]]*\]\(([^)\s]+)\))?"
"""A bash block and the picture right after it, if any."""


@dataclass(frozen=True)
class Example:
    """One README example: the command's arguments after ``fg-onnx`` and its picture."""

    argv: list[str]
    picture: Path | None
    """Relative to the repository root; None: the command has none."""

    def with_outdir(self, outdir: Path) -> list[str]:
        """The arguments with ``-o`` (or ``--outdir``) set to ``outdir``."""
        argv = list(self.argv)
        for flag in ("-o", "--outdir"):
            if flag in argv:
                argv[argv.index(flag) + 1] = str(outdir)
                return argv
        return [*argv, "-o", str(outdir)]

    def option(self, name: str) -> str | None:
        """The value of option ``name``, if the command gives it."""
        return self.argv[self.argv.index(name) + 1] if name in self.argv else None


def task_section(readme: str) -> str:
    """README's "### Task targets" section, up to the next heading of its level or above."""
    start = readme.index(SECTION)
    end = re.search(r"^#{1,3} ", readme[start + len(SECTION):], re.M)
    return readme[start:] if end is None else readme[start:start + len(SECTION) + end.start()]


def task_examples(readme: str) -> list[Example]:
    """Every ``fg-onnx explain sample_models/...`` command in a ```bash block of the task
    section, in order; a block of one command that an image follows names its picture."""
    examples = []
    for block, picture in re.findall(BLOCK, task_section(readme), re.S):
        commands = [line for line in block.splitlines()
                    if line.startswith("fg-onnx explain sample_models/")]
        for command in commands:
            shown = Path(picture) if picture and len(commands) == 1 else None
            examples.append(Example(shlex.split(command, comments=True)[1:], shown))
    return examples


def caption(row: dict[str, object]) -> str:
    """A target's label as its row gives it, and its completeness error."""
    task = row["task"]
    if row.get("map") is None:
        return str(row.get("note", ""))
    if task == "sequence":
        name = f"'{row['character']}' (char {row['position']})"
    elif task == "embedding":
        name = f"{row['target']} {row['score']:.2f}"
    elif task == "detection":
        name = f"{row['target_label']} {row['confidence']:.2f}"
    elif task == "segmentation":
        name = f"{row['target_label']} ({row['pixels']} px)"
    elif task == "scalar":
        name = f"element {row['target']} = {row['score']:.2f}"
    else:
        name = f"{row['target_label'] or row['target']} {row['score']:.2f}"
    error = row["completeness_error"]
    return name if error is None else f"{name}\ncompleteness err {error:.0e}"


def _tile(image: np.ndarray, text: str, height: int) -> np.ndarray:
    """``image`` (RGB) scaled to ``height`` with ``text`` (two lines at most) in a strip
    below."""
    width = round(image.shape[1] * height / image.shape[0])
    scaled = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    lines = text.splitlines()[:2]
    one = ", ".join(lines)
    if cv2.getTextSize(one, FONT, 0.38, 1)[0][0] < width - 6:
        lines = [one]  # a wide tile has room for it in one line
    strip = np.full((len(lines) * CAPTION + 2, width, 3), 255, np.uint8)
    for line, words in enumerate(lines):
        cv2.putText(strip, words, (3, (line + 1) * CAPTION - 4), FONT, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.vstack([scaled, strip])


def compose(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles side by side, or for wide images (rows of shapes) one above the other, padded
    to one size across, with a white gap between."""
    wide = tiles[0].shape[1] > 2 * tiles[0].shape[0]
    axis = 0 if wide else 1
    across = max(tile.shape[1 - axis] for tile in tiles)
    parts = []
    for tile in tiles:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[1 - axis] = (0, across - tile.shape[1 - axis])
        parts.append(np.pad(tile, pad, constant_values=255))
        gap = [across, across, 3]
        gap[axis] = 4
        parts.append(np.full(gap, 255, np.uint8))
    return np.concatenate(parts[:-1], axis=axis)


def render(example: Example, workdir: Path) -> np.ndarray:
    """Runs the example's command into ``workdir`` and tiles its results."""
    code = fg_onnx_main([*example.with_outdir(workdir), "--device", "cpu"])
    if code != 0:
        raise SystemExit(f"{shlex.join(example.argv)} exited {code}")
    rows = json.loads((workdir / "summary.json").read_text())
    image = load_image(Path(rows[0]["file"]))
    wide = image.shape[1] > 2 * image.shape[0]
    height = WIDE_TILE if wide else TILE
    text = rows[0].get("text")
    tiles = [_tile(image, "input" if text is None else f"input, read: {text}", height)]
    reference = example.option("--reference")
    if reference is not None:
        tiles.append(_tile(load_image(ROOT / reference), "reference", height))
    tiles += [_tile(load_image(workdir / row["overlay"]), caption(row), height)
              for row in rows if row.get("overlay")]
    return compose(tiles)


def main() -> None:
    """Writes every picture the README's task examples name."""
    os.chdir(ROOT)  # the commands name the samples relative to the repository root
    examples = task_examples((ROOT / "README.md").read_text(encoding="utf-8"))
    if not examples:
        sys.exit(f"no `fg-onnx explain sample_models/...` example under {SECTION!r}")
    for example in examples:
        if example.picture is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            picture = render(example, Path(tmp) / "out")
        # 32 levels per channel: the noisy synthetic images then compress to a third.
        save_png(ROOT / example.picture, picture // LEVEL * LEVEL + LEVEL // 2)
        size = (ROOT / example.picture).stat().st_size
        print(f"{example.picture}: {picture.shape[1]}x{picture.shape[0]}, {size // 1024} KiB")


if __name__ == "__main__":
    main()
