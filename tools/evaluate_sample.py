"""Which explanation is faithful on the sample model: runs ``fg-onnx evaluate`` on held-out
shapes images and puts the plot and the table into the docs.

Draws ``--count`` images with the sample model's own generator (a seed the model was not
trained or tested on), writes them to a temporary folder, evaluates every method, copies the
plot to ``docs/images/evaluation.png`` and replaces the table in README.md between the
``evaluation`` markers.

Usage: ``python tools/evaluate_sample.py [--count 100]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from make_sample_model import CLASSES, RENDER_SIZES, render

from fg_onnx.cli.main import main as fg_onnx_main
from fg_onnx.vision.overlay import save_png

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "shapes_cnn.onnx"
PLOT = ROOT / "docs" / "images" / "evaluation.png"
README = ROOT / "README.md"
SEED = 2024  # the model was trained, tested and sampled with seeds 1, 2 and 3
MARKERS = ("<!-- evaluation:start -->", "<!-- evaluation:end -->")


def write_images(folder: Path, count: int, seed: int) -> None:
    """``count`` class-balanced shapes images, drawn like the training data, as PNG."""
    rng = np.random.default_rng(seed)
    for i, label in enumerate(rng.permutation(np.arange(count) % len(CLASSES))):
        size = int(rng.choice(RENDER_SIZES))
        image = render(CLASSES[label], rng, size, distractor=bool(rng.random() < 0.5))
        save_png(folder / f"{i:03d}_{CLASSES[label]}.png", image)


def update_readme(table: str) -> None:
    """Replaces the text between the markers with ``table``."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {MARKERS[0]} ... {MARKERS[1]} section")
    README.write_text(pattern.sub(lambda _: f"{MARKERS[0]}\n{table}{MARKERS[1]}", text),
                      encoding="utf-8")


def main() -> None:
    """Generates the images, evaluates, and updates the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--no-docs", action="store_true", help="only print the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fg_eval_") as tmp:
        images, out = Path(tmp) / "images", Path(tmp) / "out"
        images.mkdir()
        write_images(images, args.count, SEED)
        code = fg_onnx_main(["evaluate", str(MODEL), str(images), "-o", str(out),
                             "--device", "cpu", "--batch-size", "32"])
        if code:
            raise SystemExit(code)
        if not args.no_docs:
            shutil.copyfile(out / "evaluation.png", PLOT)
            update_readme((out / "evaluation.md").read_text(encoding="utf-8"))
            print(f"updated {PLOT.relative_to(ROOT)} and README.md")


if __name__ == "__main__":
    main()
