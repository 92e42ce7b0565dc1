"""Renders docs/images/quickstart.jpg: the sample images above their FullGrad overlays.

Run from the repository root: ``python tools/readme_figure.py``. It runs the README's quick
start command into a temporary folder and tiles its output.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from fg_onnx.cli.main import main as fg_onnx_main

ROOT = Path(__file__).resolve().parents[1]
TILE = 128


def _tile(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    return cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)


def render(out: Path) -> None:
    """Writes the figure to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        code = fg_onnx_main(["explain", str(ROOT / "sample_models" / "shapes_cnn.onnx"),
                             str(ROOT / "sample_models" / "images"), "-o", tmp])
        if code != 0:
            sys.exit(code)
        rows = json.loads((Path(tmp) / "summary.json").read_text())
        top = [_tile(Path(row["file"])) for row in rows]
        bottom = [_tile(Path(tmp) / row["overlay"]) for row in rows]
        for tile, row in zip(bottom, rows, strict=True):
            cv2.putText(tile, row["predicted_label"], (4, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (255, 255, 255), 1, cv2.LINE_AA)
        grid = np.vstack([np.hstack(top), np.hstack(bottom)])
        cv2.imwrite(str(out), grid, [cv2.IMWRITE_JPEG_QUALITY, 88])


if __name__ == "__main__":
    render(ROOT / "docs" / "images" / "quickstart.jpg")
