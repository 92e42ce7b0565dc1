"""Builds the task sample models on the synthetic shapes world: a detector (YOLOv8-style
``[N, 4 + C, A]`` output), a segmenter (``[N, 1 + C, H, W]``) and a CTC reader of rows of
shapes (``[N, T, 1 + C]`` log-probabilities), each a small ReLU/MaxPool network trained on
the CPU on seeded scenes of tools/task_scenes.py, exported with fg-onnx metadata, checked
against torch on onnxruntime and measured on held-out scenes; then the sample images
(drawn by the same generator), their truth and sample_models/tasks/README.md.

Usage: ``python tools/make_task_models.py [--out sample_models/tasks] [--only detector]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from make_sample_model import (
    TASK_MODELS_HEADING,
    TrainConfig,
    conv_bn_relu,
    export_model,
    fit,
    replace_section,
)
from shapes_world import CLASSES
from task_scenes import ALPHABET, ROW_SIZE, SCENE_SIZE, Scene, row, scene
from torch import nn

from fg_onnx.targets.detection import candidates, iou, nms
from fg_onnx.targets.sequence import greedy_decode
from fg_onnx.vision.overlay import save_png
from fg_onnx.vision.preprocess import preprocess_batch, preset

COMMAND = "python tools/make_task_models.py"
STRIDE = 8
"""The detector's grid: one anchor per 8x8 cell of its input."""
GRID = SCENE_SIZE // STRIDE
SCENE_PREPROCESS = preset("imagenet", (SCENE_SIZE, SCENE_SIZE))
ROW_PREPROCESS = preset("imagenet", ROW_SIZE)
LARGE_SHARE = 0.25
"""Training scenes drawn at twice the input size and resized, as the samples are."""
SAMPLE_SEED = 100
SAMPLE_SCENES = 3
SAMPLE_ROWS = 3


# ---------------------------------------------------------------------------------------------
# Models


class Detector(nn.Module):
    """A ReLU backbone (a stride-2 convolution, then two poolings) to a stride-8 grid; per
    cell four class logits (1x1 conv) and four distances to the box's sides (a branch of its
    own, Softplus, in cells). The output is YOLOv8's [N, 4 + C, A]: decoded cx, cy, w, h in
    input pixels, then the Sigmoid of the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            conv_bn_relu(3, 16, stride=2), conv_bn_relu(16, 24), nn.MaxPool2d(2),
            conv_bn_relu(24, 48), nn.MaxPool2d(2), conv_bn_relu(48, 48), conv_bn_relu(48, 48))
        self.classes = nn.Conv2d(48, len(CLASSES), 1)
        # A prior of 2 % per class: most cells hold no shape, so training starts there
        # instead of spending its first epoch pushing 140 of 144 cells down.
        assert self.classes.bias is not None
        nn.init.constant_(self.classes.bias, -4.0)
        self.sides = nn.Sequential(conv_bn_relu(48, 16), nn.Conv2d(16, 4, 1))
        centres = (torch.arange(GRID, dtype=torch.float32) + 0.5) * STRIDE
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("anchors", torch.stack([xs.reshape(-1), ys.reshape(-1)]))

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [N, C, A] and side distances [N, 4, A] (cells)."""
        features = self.backbone(x)
        sides = nn.functional.softplus(self.sides(features))
        return self.classes(features).flatten(2), sides.flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, sides = self.raw(x)
        anchors: torch.Tensor = self.anchors  # type: ignore[assignment]
        low, high = anchors - sides[:, :2] * STRIDE, anchors + sides[:, 2:] * STRIDE
        boxes = torch.cat([(low + high) / 2, high - low], 1)
        return torch.cat([boxes, torch.sigmoid(logits)], 1)


class Segmenter(nn.Module):
    """A small U-Net: a stride-2 convolution and a pooling down, one skip at half
    resolution, class logits at half resolution resized bilinearly to the input's (linear,
    so the network stays piecewise linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(conv_bn_relu(3, 16, stride=2), conv_bn_relu(16, 24))
        # Dilated: a shape's every pixel needs to see most of the shape (up to 34 pixels
        # across) to tell a square's corner from a triangle's.
        self.deep = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(24, 48),
                                  conv_bn_relu(48, 48, dilation=2),
                                  conv_bn_relu(48, 48, dilation=4), nn.Conv2d(48, 16, 1),
                                  nn.ReLU())
        self.head = nn.Sequential(conv_bn_relu(40, 24), nn.Conv2d(24, 1 + len(CLASSES), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.first(x)
        deep = nn.functional.interpolate(self.deep(half), scale_factor=2.0, mode="nearest")
        logits = self.head(torch.cat([half, deep], 1))
        return nn.functional.interpolate(logits, scale_factor=2.0, mode="bilinear",
                                         align_corners=False)


class Reader(nn.Module):
    """ReLU convolutions and poolings to one row of 48 steps (stride 4), a 1x3 convolution
    along it, per-step logits and a final LogSoftmax: [N, T, 1 + C], blank 0."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(3, 16), nn.MaxPool2d(2), conv_bn_relu(16, 32), nn.MaxPool2d(2),
            conv_bn_relu(32, 48), nn.MaxPool2d((2, 1)), conv_bn_relu(48, 64),
            nn.MaxPool2d((ROW_SIZE[0] // 8, 1)),
            nn.Conv2d(64, 64, (1, 3), padding=(0, 1)), nn.ReLU(),
            nn.Conv2d(64, 1 + len(CLASSES), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.body(x).squeeze(2).transpose(1, 2)
        return torch.log_softmax(steps, -1)


# ---------------------------------------------------------------------------------------------
# Data


def draw_scenes(seed: int, count: int, draw: Callable[[np.random.Generator, int], Scene],
                ) -> list[tuple[Scene, float]]:
    """``count`` scenes (a share drawn at twice the size) and each one's factor to the
    model input."""
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(count):
        factor = 2 if rng.random() < LARGE_SHARE else 1
        drawn.append((draw(rng, factor), 1.0 / factor))
    return drawn


def _scene_at(rng: np.random.Generator, factor: int) -> Scene:
    return scene(rng, SCENE_SIZE * factor)


def detection_targets(drawn: list[tuple[Scene, float]]) -> dict[str, torch.Tensor]:
    """Per scene: class targets [C, A] (1 at the cells near a shape's centre), side
    distances [4, A] in cells and the positive cells [A]. A cell is positive for a shape
    when its centre lies in the middle 60 % of the box, or is the nearest to its centre."""
    centres = (np.arange(GRID) + 0.5) * STRIDE
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    anchors = np.stack([xs.reshape(-1), ys.reshape(-1)])  # x, y per anchor, row-major
    classes = np.zeros((len(drawn), len(CLASSES), GRID * GRID), np.float32)
    sides = np.zeros((len(drawn), 4, GRID * GRID), np.float32)
    positive = np.zeros((len(drawn), GRID * GRID), bool)
    for i, (drawn_scene, scale) in enumerate(drawn):
        for shape in drawn_scene.shapes:
            x0, y0, x1, y1 = shape.box(scale)
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            near = (np.abs(anchors[0] - cx) <= 0.3 * w) & (np.abs(anchors[1] - cy) <= 0.3 * h)
            near[np.argmin(np.hypot(anchors[0] - cx, anchors[1] - cy))] = True
            classes[i, shape.label, near] = 1.0
            positive[i, near] = True
            sides[i, :, near] = (np.stack([anchors[0] - x0, anchors[1] - y0, x1 - anchors[0],
                                           y1 - anchors[1]], 1)[near] / STRIDE)
    return {"classes": torch.from_numpy(classes), "sides": torch.from_numpy(sides),
            "positive": torch.from_numpy(positive)}


def images_of(drawn: list[tuple[Scene, float]], spec: object) -> np.ndarray:
    """The scenes preprocessed as fg-onnx explain does."""
    return preprocess_batch([s.image for s, _ in drawn], spec)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Losses and measures


def detection_loss(model: Detector, x: torch.Tensor, targets: dict[str, torch.Tensor],
                   ) -> torch.Tensor:
    """Binary cross-entropy of every cell's class logits plus the L1 error of the positive
    cells' side distances, per positive cell."""
    logits, sides = model.raw(x)
    positive = targets["positive"]
    count = positive.sum().clamp(min=1)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets["classes"],
                                                         reduction="sum")
    l1 = ((sides - targets["sides"]).abs().sum(1) * positive).sum()
    return (bce + l1) / count


def detection_recall(raw: np.ndarray, drawn: list[tuple[Scene, float]],
                     threshold: float = 0.25) -> tuple[float, float]:
    """Recall and precision at IoU 0.5 (same class), detections decoded as the detection
    target does (threshold, per-class NMS at 0.45)."""
    found = hits = truths = 0
    for sample, (drawn_scene, scale) in zip(raw, drawn, strict=True):
        decoded = candidates(sample, "yolov8")
        best, classes = decoded.probabilities.max(1), decoded.probabilities.argmax(1)
        above = np.nonzero(best >= threshold)[0]
        kept = above[nms(decoded.boxes[above], best[above], classes[above], 0.45)]
        found += len(kept)
        for shape in drawn_scene.shapes:
            truths += 1
            same = kept[classes[kept] == shape.label]
            box = np.asarray(shape.box(scale))
            hits += bool(len(same)) and bool(iou(box, decoded.boxes[same]).max() >= 0.5)
    return hits / truths, hits / max(found, 1)


def mean_iou(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each class's IoU of the predicted (arg-max) and the drawn pixels, over the test set."""
    predicted = logits.argmax(1)
    names = ("background", *CLASSES)
    return {name: float(((predicted == c) & (labels == c)).sum()
                        / max(((predicted == c) | (labels == c)).sum(), 1))
            for c, name in enumerate(names)}


def read_rows(log_probs: np.ndarray) -> list[str]:
    """Greedy CTC decoding of each row, as the sequence target decodes."""
    return ["".join(ALPHABET[cls - 1] for cls, _, _ in greedy_decode(steps, 0))
            for steps in log_probs]


# ---------------------------------------------------------------------------------------------
# Training, export and measures per task


@dataclass(frozen=True)
class TaskSpec:
    """One task model: how it is trained, exported and measured."""

    name: str
    """The file's stem (``<name>.onnx``)."""
    build: Callable[[], nn.Module]
    draw: Callable[[np.random.Generator, int], Scene]
    preprocess: object
    cfg: TrainConfig
    outputs: list[str]
    metadata: dict[str, str]
    doc: str


def _scene_labels(drawn: list[tuple[Scene, float]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.label_map((SCENE_SIZE, SCENE_SIZE)) for s, _ in drawn]))


def batch_loss(spec: TaskSpec, model: nn.Module, x: torch.Tensor,
               drawn: list[tuple[Scene, float]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The task's mean loss of a batch of example indices."""
    if spec.name == "detector":
        targets = detection_targets(drawn)
        return lambda idx: detection_loss(model, x[idx],  # type: ignore[arg-type]
                                          {k: v[idx] for k, v in targets.items()})
    if spec.name == "segmenter":
        labels = _scene_labels(drawn)
        return lambda idx: nn.functional.cross_entropy(model(x[idx]), labels[idx])
    texts = [[ALPHABET.index(c) + 1 for c in s.text] for s, _ in drawn]
    lengths = torch.tensor([len(t) for t in texts])
    flat = torch.tensor([c for t in texts for c in t])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        log_probs = model(x[idx]).transpose(0, 1)  # [T, N, C]
        wanted = torch.cat([flat[starts[i]:starts[i + 1]] for i in idx.tolist()])
        steps = torch.full((len(idx),), log_probs.shape[0], dtype=torch.long)
        return ctc(log_probs, wanted, steps, lengths[idx])
    return loss


def measure(spec: TaskSpec, outputs: np.ndarray, drawn: list[tuple[Scene, float]],
            ) -> dict[str, float]:
    """The task's accuracy on held-out scenes: detection recall and precision (IoU 0.5),
    per-class IoU of the segmentation, the share of rows read exactly."""
    if spec.name == "detector":
        recall, precision = detection_recall(outputs, drawn)
        return {"recall": recall, "precision": precision}
    if spec.name == "segmenter":
        return mean_iou(outputs, _scene_labels(drawn).numpy())
    read = read_rows(outputs)
    return {"sequence accuracy": float(np.mean([r == s.text for r, (s, _) in
                                                 zip(read, drawn, strict=True)]))}


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's first output on onnxruntime CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([np.asarray(session.run(None, {"image": x[i:i + 128]})[0])
                           for i in range(0, len(x), 128)])


def make(spec: TaskSpec, out: Path) -> dict[str, object]:
    """Draws, trains, exports, checks against torch and measures one task model."""
    started = time.perf_counter()
    torch.manual_seed(spec.cfg.seed)
    train_set = draw_scenes(spec.cfg.seed + 1, spec.cfg.train_count, spec.draw)
    test_set = draw_scenes(spec.cfg.seed + 2, spec.cfg.test_count, spec.draw)
    x_train = torch.from_numpy(images_of(train_set, spec.preprocess)).contiguous(
        memory_format=torch.channels_last)
    x_test = images_of(test_set, spec.preprocess)
    drawing = time.perf_counter() - started
    model = spec.build().to(memory_format=torch.channels_last)
    cpu = time.process_time()
    fit(model, len(x_train), batch_loss(spec, model, x_train, train_set), spec.cfg)
    training, cpu = time.perf_counter() - started - drawing, time.process_time() - cpu
    path = out / f"{spec.name}.onnx"
    export_model(model, path, (1, *x_test.shape[1:]), spec.outputs, spec.metadata, spec.doc)
    with torch.no_grad():
        expected = model(torch.from_numpy(x_test[:64])).numpy()
    outputs = run_onnx(path, x_test)
    gap = float(np.abs(outputs[:64] - expected).max())
    assert gap < 1e-3, f"{path}: onnxruntime and torch differ by {gap}"
    found = measure(spec, outputs, test_set)
    print(f"{spec.name}: {found} (onnx vs torch {gap:.1e}; drawing {drawing:.0f} s, "
          f"training {training:.0f} s, {cpu:.0f} s of CPU)", flush=True)
    return {"measures": found, "training_s": round(training), "training_cpu_s": round(cpu),
            "test_count": len(test_set),
            "train_count": len(train_set), "epochs": spec.cfg.epochs,
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": path.stat().st_size, "torch": torch.__version__}


SPECS = (
    TaskSpec("detector", Detector, _scene_at, SCENE_PREPROCESS,
             TrainConfig(train_count=3000, test_count=300, epochs=7, batch_size=32, lr=3e-3),
             ["detections"],
             {"fg_onnx.preprocess": "imagenet", "fg_onnx.labels": json.dumps(CLASSES)},
             f"Synthetic shapes detector (YOLOv8-style output) made by `{COMMAND}`."),
    TaskSpec("segmenter", Segmenter, _scene_at, SCENE_PREPROCESS,
             TrainConfig(train_count=3000, test_count=300, epochs=5, batch_size=32, lr=3e-3),
             ["logits"],
             {"fg_onnx.preprocess": "imagenet",
              "fg_onnx.labels": json.dumps(["background", *CLASSES])},
             f"Synthetic shapes segmenter made by `{COMMAND}`."),
    TaskSpec("reader", Reader, row, ROW_PREPROCESS,
             TrainConfig(train_count=4000, test_count=400, epochs=6, batch_size=32, lr=3e-3),
             ["log_probs"],
             {"fg_onnx.preprocess": "imagenet", "fg_onnx.alphabet": json.dumps(list(ALPHABET))},
             f"Synthetic shapes CTC reader (blank 0, then {ALPHABET}) made by `{COMMAND}`."),
)


# ---------------------------------------------------------------------------------------------
# Sample images


def write_samples(out: Path) -> dict[str, dict[str, object]]:
    """The sample scenes (twice the model's size, PNG) with their truth: each scene's shapes
    (class, box in the image's pixels) and its label map (``masks/<stem>.png``, pixel =
    class index, 0 the background), each row's text."""
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SAMPLE_SEED)
    truth: dict[str, dict[str, object]] = {}
    for k in range(1, SAMPLE_SCENES + 1):
        drawn = scene(rng, 2 * SCENE_SIZE)
        save_png(images / f"scene_{k}.png", drawn.image)
        save_png(masks / f"scene_{k}.png",
                 drawn.label_map(drawn.image.shape[:2]).astype(np.uint8))
        truth[f"scene_{k}.png"] = {"shapes": [
            {"label": CLASSES[s.label], "box": list(s.box())} for s in drawn.shapes]}
    for k in range(1, SAMPLE_ROWS + 1):
        drawn = row(rng, 2)
        save_png(images / f"row_{k}.png", drawn.image)
        truth[f"row_{k}.png"] = {"text": drawn.text}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


README = """{heading} (`tasks/`)

Three small networks trained on scenes of the same shapes world, to try every task of
`fg-onnx explain` on shipped files (the top-level README's "Every task on the shipped
samples" runs each one). Each is ReLU/MaxPool only, batch norms folded into the
convolutions by the exporter (the detector's box branch ends in a Softplus, which the
explained class logits do not pass through), so FullGrad's completeness holds exactly.
Input `image`: float32 NCHW with a dynamic batch; preprocessing `imagenet` (metadata
`fg_onnx.preprocess`, as `shapes_cnn.onnx`). Export: `torch.onnx.export(dynamo=False,
opset_version=17)`.

- **`tasks/detector.onnx`** ({detector_kib} KiB, {detector_parameters} parameters): input
  `[N, 3, 96, 96]`; output `detections` `[N, 8, 144]` in YOLOv8's layout: per 8x8 cell
  (anchor) cx, cy, w, h in input pixels, then the Sigmoid of the 4 class logits. Classes
  (`fg_onnx.labels`): {labels}. Held out: recall {recall:.1%}, precision {precision:.1%}
  on {detector_tests} scenes (IoU 0.5 with a drawn box of the same class; threshold 0.25
  and per-class NMS at 0.45, as the detection target decodes).
- **`tasks/segmenter.onnx`** ({segmenter_kib} KiB, {segmenter_parameters} parameters):
  input `[N, 3, 96, 96]`; output `logits` `[N, 5, 96, 96]` (computed at half resolution,
  resized bilinearly in the graph). Classes (`fg_onnx.labels`): {seg_labels}. Held out,
  IoU of the predicted and the drawn pixels per class on {segmenter_tests} scenes: {ious}.
- **`tasks/reader.onnx`** ({reader_kib} KiB, {reader_parameters} parameters): input
  `[N, 3, 32, 192]` (a row of shapes); output `log_probs` `[N, 48, 5]` (LogSoftmax over
  blank 0 and the 4 shapes; one step per 4 pixels). Alphabet (`fg_onnx.alphabet`, the
  characters after the blank): {alphabet}, for circle, square, triangle, cross. Held out:
  {sequence:.1%} of {reader_tests} rows read exactly (greedy CTC decoding).

Scenes: 2-4 shapes of random class, size (circumradius 9-17 px at 96x96), place, rotation
and colour that do not touch, on the gradient backgrounds of `shapes_cnn.onnx`'s images,
half of them with a blob of no class. Rows: 3-6 shapes side by side (circumradius 8-10.5 px
at 32x192, at least 4 px apart, so that a repeated shape has a blank between). A quarter of
the training scenes are drawn at twice the size and resized, as the samples are.

## How the task models were made

```
{command}
```

The script (tools/make_task_models.py, scenes from tools/task_scenes.py, shapes from
tools/shapes_world.py) draws seeded training and test scenes, trains each model with AdamW
and a one-cycle schedule on the CPU with one thread ({training}; torch {torch}), exports
it, checks it against torch on onnxruntime, measures it on the test scenes (its numbers go
to `tasks/training.json`), then draws the samples and writes this section. `--only NAME`
remakes one model. With the same torch build, a rerun writes the models and images byte for
byte the same (checked with two runs).

## Task sample images

Drawn by the same generator (seed {seed}, the first draws, never chosen by their maps), at
twice the models' input size: `tasks/images/scene_<k>.png` (192x192; detector and
segmenter) and `tasks/images/row_<k>.png` (64x384; reader). `tasks/truth.json` holds what
was drawn: each scene's shapes (class, box in the image's pixels) and each row's text;
`tasks/masks/scene_<k>.png` is each scene's label map (pixel value = the segmenter's class
index, 0 the background).

| file | drawn |
| --- | --- |
{rows}
"""


def write_readme(readme: Path, record: dict[str, dict[str, object]],
                 truth: dict[str, dict[str, object]]) -> None:
    """The task models' section of sample_models/README.md, from the measures recorded."""
    values: dict[str, object] = {}
    for spec in SPECS:
        made = record[spec.name]
        values[f"{spec.name}_kib"] = int(made["bytes"]) // 1024  # type: ignore[call-overload]
        values[f"{spec.name}_parameters"] = made["parameters"]
        values[f"{spec.name}_tests"] = made["test_count"]
    measures = {s.name: record[s.name]["measures"] for s in SPECS}
    ious = ", ".join(f"{k} {v:.2f}" for k, v in measures["segmenter"].items())  # type: ignore[attr-defined]
    training = "; ".join(f"{s.name}: {record[s.name]['train_count']} scenes, "
                         f"{record[s.name]['epochs']} epochs, "
                         f"{record[s.name]['training_cpu_s']} s of CPU "
                         f"({record[s.name]['training_s']} s of wall time)" for s in SPECS)
    rows = "\n".join(f"| `tasks/images/{name}` | " + (
        str(drawn["text"]) if "text" in drawn else ", ".join(
            s["label"] for s in drawn["shapes"])) + " |"  # type: ignore[attr-defined]
        for name, drawn in truth.items())
    text = README.format(
        heading=TASK_MODELS_HEADING, labels=json.dumps(CLASSES),
        seg_labels=json.dumps(["background", *CLASSES]), alphabet=json.dumps(list(ALPHABET)),
        ious=ious, training=training, torch=record["reader"]["torch"], command=COMMAND,
        seed=SAMPLE_SEED, rows=rows, **measures["detector"],  # type: ignore[arg-type]
        sequence=measures["reader"]["sequence accuracy"], **values)  # type: ignore[index]
    old = readme.read_text(encoding="utf-8") if readme.exists() else ""
    readme.write_text(replace_section(old, TASK_MODELS_HEADING, text), encoding="utf-8")


def main() -> None:
    """Makes the models named by ``--only`` (default all), records their measures in
    ``training.json``, writes the samples and the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_models/tasks"))
    parser.add_argument("--only", choices=[s.name for s in SPECS], action="append")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CPUs this runs on are shared
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "training.json"
    record: dict[str, dict[str, object]] = {}
    for spec in SPECS:
        if args.only is None or spec.name in args.only:
            made = make(spec, args.out)
            # Read again: another run (--only another model) may have written meanwhile.
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
            record[spec.name] = made
            record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    truth = write_samples(args.out)
    if all(spec.name in record for spec in SPECS):
        write_readme(args.out.parent / "README.md", record, truth)


if __name__ == "__main__":
    main()
