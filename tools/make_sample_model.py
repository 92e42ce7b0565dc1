"""Builds the bundled sample model: a small CNN trained on synthetic "shapes" images.

Generates a seeded dataset with OpenCV (a circle, square, triangle or cross of random size,
position, rotation and colour on a textured gradient background, sometimes with a soft distractor
blob), trains a ReLU-only CNN (Conv-BN-ReLU, MaxPool, a residual block, global max pooling,
Linear) on the CPU, exports it to ONNX with fg-onnx preprocessing metadata, and writes sample
images, their shape masks and a README. Everything is deterministic for a given seed and torch
build.

The images come from tools/shapes_world.py, which tools/make_task_models.py draws its
scenes with too.

Usage: ``python tools/make_sample_model.py [--out sample_models]``
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
from shapes_world import CLASSES, draw, jpeg_roundtrip, render
from torch import nn

from fg_onnx.vision.images import load_image
from fg_onnx.vision.overlay import save_png
from fg_onnx.vision.preprocess import preprocess_batch, preset

INPUT_SIZE = 64
MODEL_NAME = "shapes_cnn.onnx"
COMMAND = "python tools/make_sample_model.py"
RENDER_SIZES = (64, 96, 128)  # training sees the resize that preprocessing applies at run time
PREPROCESS = preset("imagenet", (INPUT_SIZE, INPUT_SIZE))
SAMPLE_SEED = 3  # training, test and sample images: seeds 1, 2 and 3
SAMPLES = (  # (file name, class, size, distractor)
    ("circle.png", "circle", 128, False),
    ("square.jpg", "square", 128, False),
    ("triangle.png", "triangle", 128, True),
    ("cross.jpg", "cross", 128, True),
    ("circle_small.jpg", "circle", 64, True),
    ("triangle_small.png", "triangle", 64, False),
)


# ---------------------------------------------------------------------------------------------
# Data set


def make_dataset(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced, preprocessed dataset: (N, 3, 64, 64) float32 inputs and int64 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CLASSES))
    images = []
    for label in labels:
        size = int(rng.choice(RENDER_SIZES))
        image = render(CLASSES[label], rng, size, distractor=bool(rng.random() < 0.5))
        if rng.random() < 0.3:
            image = jpeg_roundtrip(image, int(rng.integers(70, 96)))
        images.append(image)
    return preprocess_batch(images, PREPROCESS), labels


# ---------------------------------------------------------------------------------------------
# Model


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm and ReLU (BN folds into the Conv bias on export)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(cout), nn.ReLU()
    )


class Residual(nn.Module):
    """Two Conv-BN layers with an identity shortcut, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


def build_model() -> nn.Module:
    """ReLU-only CNN: 64x64x3 -> 4 logits, about 43k parameters.

    Global max pooling, not average: behind an average every position of the last feature
    maps gets the same gradient, so FullGrad's deep bias terms (most of its map) light up
    wherever a feature is merely active, textured background included; behind a max only
    the position that decides each feature does (tools/showcase_sample.py measures both)."""
    return nn.Sequential(
        conv_bn_relu(3, 16), nn.MaxPool2d(2),
        conv_bn_relu(16, 32), nn.MaxPool2d(2),
        Residual(32),
        conv_bn_relu(32, 64), nn.MaxPool2d(2),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)),
    )


@dataclass
class TrainConfig:
    """Training hyper-parameters."""

    seed: int = 0
    train_count: int = 6000
    test_count: int = 1000
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3


def fit(model: nn.Module, count: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
        cfg: TrainConfig) -> None:
    """AdamW with a one-cycle schedule over ``count`` examples in seeded random batches;
    ``batch_loss`` maps a batch's example indices to its mean loss. Prints the loss per
    epoch (the task models of tools/make_task_models.py train with it too)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * ((count + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(count, generator=gen)
        total = 0.0
        for start in range(0, count, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / count:.4f}", flush=True)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> None:
    """Cross-entropy training of the classifier (see :func:`fit`)."""
    xs = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    ys = torch.from_numpy(y)
    fit(model, len(xs), lambda idx: nn.functional.cross_entropy(model(xs[idx]), ys[idx]), cfg)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits for a preprocessed batch, in eval mode."""
    model.eval()
    xs = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    return torch.cat([model(xs[i : i + 256]) for i in range(0, len(xs), 256)]).numpy()


# ---------------------------------------------------------------------------------------------
# Export and samples


def export_model(model: nn.Module, path: Path, example: tuple[int, ...], outputs: list[str],
                 metadata: dict[str, str], doc: str) -> onnx.ModelProto:
    """Writes ``model`` as ONNX opset 17 with input "image" (shaped like ``example``) and a
    dynamic batch axis on it and every output, with ``metadata`` and the doc string."""
    model.eval().to(memory_format=torch.contiguous_format)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but still exact
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.zeros(*example),), buffer,
            dynamo=False, opset_version=17, input_names=["image"], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = doc
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())
    return proto


def export_onnx(model: nn.Module, path: Path) -> onnx.ModelProto:
    """The classifier with fg-onnx metadata: its preprocessing preset and class names."""
    return export_model(model, path, (1, 3, INPUT_SIZE, INPUT_SIZE), ["logits"],
                        {"fg_onnx.preprocess": "imagenet", "fg_onnx.labels": json.dumps(CLASSES)},
                        f"Synthetic shapes classifier made by `{COMMAND}`.")


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Runs the exported model on onnxruntime CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": x})[0])


def write_samples(image_dir: Path, mask_dir: Path, seed: int,
                  ) -> list[tuple[str, str, np.ndarray]]:
    """Writes the sample PNG/JPG files and each one's shape mask (``mask_dir/<stem>.png``,
    0 or 255, the pixels the shape covers at least half); returns (file name, class, RGB
    image) as written."""
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for name, label, size, distractor in SAMPLES:
        drawing = draw(label, rng, size, distractor)
        image = drawing.compose()
        ok = cv2.imwrite(str(mask_dir / f"{Path(name).stem}.png"),
                         drawing.mask.astype(np.uint8) * 255)
        assert ok
        path = image_dir / name
        if path.suffix == ".png":
            save_png(path, image)
        else:
            ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok
            path.write_bytes(data.tobytes())
        written.append((name, label, load_image(path)))
    return written


def write_readme(path: Path, accuracy: float, cfg: TrainConfig, params: int,
                 samples: list[tuple[str, str, str]], seconds: float) -> None:
    """The README of sample_models/, with the measured numbers (the task models' section,
    which tools/make_task_models.py writes, is kept)."""
    rows = "\n".join(f"| `images/{n}` | {t} | {p} |" for n, t, p in samples)
    text = README.format(
        command=COMMAND, accuracy=100 * accuracy, test_count=cfg.test_count,
        train_count=cfg.train_count, epochs=cfg.epochs, params=params, seed=cfg.seed,
        classes=json.dumps(CLASSES), rows=rows, seconds=seconds, model=MODEL_NAME,
        size=(path.parent / MODEL_NAME).stat().st_size // 1024, torch_version=torch.__version__,
    )
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old[old.index(TASK_MODELS_HEADING):] if TASK_MODELS_HEADING in old else ""
    path.write_text(replace_section(text, TASK_MODELS_HEADING, kept), encoding="utf-8")


TASK_MODELS_HEADING = "## Task models"
"""The last section of sample_models/README.md: tools/make_task_models.py's."""


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with everything from the line ``heading`` on (the last section) replaced by
    ``section`` (appended where ``text`` has no such heading)."""
    start = text.find(f"\n{heading}")
    head = text if start < 0 else text[:start + 1]
    return head.rstrip("\n") + "\n\n" + section if section else head


README = """# Sample models

## `{model}` ({size} KiB)

A small image classifier for synthetic "shapes" pictures, made to try fg-onnx end to end
(model plus images) without downloading anything.

- **Classes** (output index order, also in metadata `fg_onnx.labels`): `{classes}`
- **Input** `image`: float32 `[batch, 3, 64, 64]` (NCHW, dynamic batch); output `logits`:
  `[batch, 4]` (no softmax).
- **Preprocessing** (metadata `fg_onnx.preprocess` = `imagenet`): RGB, resized to 64x64 with
  bilinear interpolation, scaled to [0, 1], minus mean `[0.485, 0.456, 0.406]`, divided by std
  `[0.229, 0.224, 0.225]`.
- **Architecture**: Conv-BN-ReLU 16 → MaxPool → Conv-BN-ReLU 32 → MaxPool → residual block
  (two Conv-BN, identity add, ReLU) → Conv-BN-ReLU 64 → MaxPool → global max pooling →
  Linear; {params} parameters. ReLU and max pooling only (piecewise linear), so FullGrad's
  completeness holds exactly. Batch norms are folded into the convolution biases by the
  exporter.
- **Why global max pooling**: the model before it (global average pooling, the same layers
  and data) decided on the shape, not the background (the same accuracy with the background
  replaced by a flat colour, chance without the shape), yet its FullGrad maps put most of
  their heat on the background: behind an average every position of the last feature maps
  gets the same gradient, so the deep layers' bias terms, most of the map, light up wherever
  a feature is merely active. Behind a max only the position that decides each feature gets
  a gradient. The numbers, before and after, are in the top-level README ("Why the earlier
  sample's maps lit up the background"), measured by `python tools/showcase_sample.py`.
- **Export**: `torch.onnx.export(dynamo=False, opset_version=17)`.
- **Accuracy**: {accuracy:.1f}% on {test_count} held-out synthetic images.

## How it was made

```
{command}
```

The script (seed {seed}) draws {train_count} training and {test_count} test images with OpenCV:
a filled circle, square, triangle or cross of random size, position, rotation and colour on a
two-colour gradient with coarse texture and pixel noise, half of them with a soft blob that
belongs to no class; images are rendered at 64, 96 or 128 pixels, some JPEG-compressed, and
resized to 64x64 as preprocessing does. It trains for {epochs} epochs on the CPU
(about {seconds:.0f} s here, torch {torch_version}), exports, checks the ONNX output against
torch on onnxruntime, and writes the sample images with their masks. Re-running it rewrites
every file in this folder; with the same torch build the model and images come out byte for
byte the same.

## Sample images

Drawn like the training data (seed 3, never chosen by their maps) at 128x128, two at
64x64; the JPEGs at quality 92. `masks/<stem>.png` is each image's shape as the generator
drew it (255 where the shape covers at least half the pixel, else 0), the ground truth of the
localisation metrics.

| file | drawn class | model's top class |
| --- | --- | --- |
{rows}
"""


def main() -> None:
    """Generates data, trains, exports and writes samples under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_models"))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = parser.parse_args()
    cfg = TrainConfig(epochs=args.epochs)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(2)
    x_train, y_train = make_dataset(cfg.seed + 1, cfg.train_count)
    x_test, y_test = make_dataset(cfg.seed + 2, cfg.test_count)
    print(f"dataset: {time.perf_counter() - started:.1f} s")
    model = build_model().to(memory_format=torch.channels_last)
    train(model, x_train, y_train, cfg)
    accuracy = float((predict(model, x_test).argmax(1) == y_test).mean())
    print(f"test accuracy: {100 * accuracy:.2f}% ({cfg.test_count} images)")
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / MODEL_NAME
    export_onnx(model, model_path)
    gap = np.abs(onnx_logits(model_path, x_test[:64]) - predict(model, x_test[:64])).max()
    print(f"onnx vs torch max |diff|: {gap:.2e}")
    assert gap < 1e-3, "exported model disagrees with torch"
    samples = write_samples(args.out / "images", args.out / "masks", SAMPLE_SEED)
    batch = preprocess_batch([s[2] for s in samples], PREPROCESS)
    top = onnx_logits(model_path, batch).argmax(1)
    table = [(name, label, CLASSES[t]) for (name, label, _), t in zip(samples, top, strict=True)]
    for name, label, guess in table:
        print(f"sample {name}: drawn {label}, predicted {guess}")
    params = sum(p.numel() for p in model.parameters())
    seconds = time.perf_counter() - started
    write_readme(args.out / "README.md", accuracy, cfg, params, table, seconds)
    print(f"done in {seconds:.0f} s: {model_path} ({model_path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
