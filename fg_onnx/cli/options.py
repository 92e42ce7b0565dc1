"""The option groups several commands share, each with the function that turns the parsed
arguments into the object the library takes (Polygraphy's shared argument groups are the model).

A command adds a group with ``add_<group>_options(parser)`` and reads it back with the group's
function; options that only one command has are passed to that function by the command, so
every function reads only arguments its own group added.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fg_onnx.choices import (
    LAYOUT_CHOICES,
    PRECISIONS,
    SEQUENCE_LAYOUTS,
    GraphMethod,
    Provider,
    SequenceLayout,
)
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.fullgrad.precision import DEFAULT_GRADIENT_SCALE
from fg_onnx.runtime.providers import DEVICES, Device
from fg_onnx.vision.images import MAX_PIXELS
from fg_onnx.vision.preprocess import PRESETS, ModelFacts, Preprocess, model_preprocess

if TYPE_CHECKING:
    from fg_onnx.methods.params import MethodParams

DEFAULT_BATCH_SIZE = 16


def parse_size(text: str) -> tuple[int, int]:
    """``224x224`` or ``224`` -> (224, 224)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW with positive sizes, got {text!r}")
    # The images' own limit: larger inputs take gigabytes per image, and OpenCV or
    # onnxruntime would fail on them with errors that do not name the option.
    if sizes[0] * sizes[1] > MAX_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too large: {sizes[0] * sizes[1] / 1e6:.0f} megapixels, the limit is "
            f"{MAX_PIXELS / 1e6:.0f}")
    return sizes[0], sizes[1]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _floats(text: str) -> tuple[float, ...]:
    """One value (every channel) or three (R, G, B)."""
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one number or three like 0.5,0.5,0.5, got {text!r}"
        ) from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one number or three (R,G,B), got {text!r}")
    return values


# ---------------------------------------------------------------------------------------------
# Augmentation: how the model is rewritten


def add_augment_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that augments a model."""
    group = parser.add_argument_group("augmentation (how the model is rewritten)")
    group.add_argument("--input", metavar="NAME",
                       help="explained input (default: the only float input)")
    group.add_argument("--output", metavar="NAME",
                       help="explained output (default: the first output)")
    group.add_argument("--layout", default="auto", choices=LAYOUT_CHOICES,
                       help="input layout (default: detected from the graph)")
    group.add_argument("--input-size", type=parse_size, metavar="HxW",
                       help="fix the model's input size when the model leaves it open (the "
                            "size the rewritten graph takes; --size is the size images are "
                            "resized to, and must match it)")
    group.add_argument("--implicit-biases", action="store_true",
                       help="add implicit-bias taps at every non-homogeneous node, so "
                            "completeness holds for any network")
    group.add_argument("--explain-probabilities", action="store_true",
                       help="explain a final Softmax/LogSoftmax/Sigmoid output itself, not "
                            "the logits before it")
    group.add_argument("--cam-layer", metavar="TENSOR",
                       help="grad-cam/grad-cam++ activation (default: the last Conv output "
                            "on the gradient path, after a BatchNorm/ReLU that follows it)")
    group.add_argument("--precision", choices=PRECISIONS, default="float32",
                       help="float16 runs the network and its backward pass in float16 "
                            "(for GPUs: onnxruntime's CPU provider computes float16 in "
                            "float32, slower; inputs and outputs stay float32; check the "
                            "completeness error)")
    group.add_argument("--gradient-scale", type=float, metavar="S",
                       help=f"float16: start the backward pass from S times the one-hot "
                            f"class (default {DEFAULT_GRADIENT_SCALE:g}); lower it if maps "
                            "come out non-finite, raise it if completeness suffers from "
                            "tiny gradients")


def augment_options(args: argparse.Namespace, *, method: GraphMethod = "fullgrad",
                    provider: Provider = "any", seed_input: bool = False,
                    components: bool = False,
                    sequence_layout: SequenceLayout = "auto") -> AugmentOptions:
    """AugmentOptions from the group's arguments and the command's own settings
    (``sequence_layout``: ``--sequence-layout``, which explain and augment have)."""
    return AugmentOptions(
        input=args.input, output=args.output, layout=args.layout,
        implicit_biases=args.implicit_biases, explain_probabilities=args.explain_probabilities,
        seed_input=seed_input, components=components, input_size=args.input_size,
        method=method, cam_layer=args.cam_layer, provider=provider, precision=args.precision,
        gradient_scale=args.gradient_scale, sequence_layout=sequence_layout,
    )


# ---------------------------------------------------------------------------------------------
# Preprocessing: how images become model inputs


def add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    """How images become model inputs."""
    group = parser.add_argument_group("preprocessing (how images become model inputs)")
    group.add_argument("--preset", choices=sorted(PRESETS),
                       help="normalisation (default: the model's fg_onnx.preprocess metadata, "
                            "else imagenet)")
    group.add_argument("--size", type=parse_size, metavar="HxW",
                       help="size the images are resized to (default: the model's input "
                            "size, or --input-size); it must be a size the model takes")
    group.add_argument("--mean", type=_floats, metavar="M|R,G,B",
                       help="mean: one value for every channel, or R,G,B; 1-channel "
                            "(grayscale) models take one value (default: the preset's; "
                            "averaged for them)")
    group.add_argument("--std", type=_floats, metavar="S|R,G,B", help="std, as --mean")
    group.add_argument("--bgr", action="store_true", help="the model expects BGR channels")


def preprocess_options(args: argparse.Namespace, model: ModelFacts) -> Preprocess:
    """The preprocessing the options ask for, completed from the model's metadata."""
    return model_preprocess(model, size=args.size, preset_name=args.preset, mean=args.mean,
                            std=args.std, bgr=args.bgr)


# ---------------------------------------------------------------------------------------------
# Methods that combine several runs


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """Settings of the methods that combine several runs."""
    # fg_onnx.methods loads onnxruntime: imported here, as only commands that run models
    # add this group (augment works without onnxruntime).
    from fg_onnx.methods.params import MethodParams

    defaults = MethodParams()
    group = parser.add_argument_group("multi-run methods (smoothgrad, smooth-fullgrad, "
                                      "integrated-gradients)")
    group.add_argument("--samples", type=int, default=defaults.samples, metavar="N",
                       help=f"noisy copies per image for smoothgrad and smooth-fullgrad "
                            f"(default {defaults.samples})")
    group.add_argument("--noise", type=float, default=defaults.noise, metavar="SIGMA",
                       help="noise σ as a fraction of each image's value range "
                            f"(default {defaults.noise})")
    group.add_argument("--steps", type=int, default=defaults.steps, metavar="N",
                       help=f"integrated-gradients path steps (default {defaults.steps})")


def method_params(args: argparse.Namespace, *, seed: int = 0) -> MethodParams:
    """MethodParams from the group's arguments; ``seed`` is the command's noise seed."""
    from fg_onnx.methods.params import MethodParams

    return MethodParams(samples=args.samples, noise=args.noise, steps=args.steps, seed=seed)


# ---------------------------------------------------------------------------------------------
# Runtime: where and how many at a time


@dataclass(frozen=True)
class RuntimeOptions:
    """Where the model runs and how many images one onnxruntime run takes."""

    device: Device
    batch_size: int


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where the model runs and how many images one run takes."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", choices=DEVICES, default="auto",
                       help="auto: CUDA when onnxruntime-gpu and a GPU are usable, else the "
                            "CPU (default); cuda: fail instead of falling back")
    group.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                       metavar="N",
                       help=f"images per onnxruntime run (default {DEFAULT_BATCH_SIZE}; a model "
                            "whose input fixes the batch size runs that many)")


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """RuntimeOptions from the group's arguments."""
    return RuntimeOptions(device=args.device, batch_size=args.batch_size)


def methods_list(text: str) -> list[str]:
    """--methods: comma-separated method names (and random), each checked."""
    from fg_onnx.methods import get_method  # imports onnxruntime, which augment does without

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one method")
    for name in names:
        if name != "random":
            try:
                get_method(name)
            except FgOnnxError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def add_output_options(parser: argparse.ArgumentParser, default: str) -> None:
    """-o/--outdir and --force of the commands that write results."""
    parser.add_argument("-o", "--outdir", type=Path, default=Path(default),
                        help=f"output folder (default: {default})")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files")


def add_model_and_images(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The MODEL and IMAGE_OR_DIR... arguments of the commands that run images."""
    parser.add_argument("model", type=Path, help=model_help)
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files, or folders searched recursively (jpg, png, bmp, "
                             "webp, tiff)")


# ---------------------------------------------------------------------------------------------
# Targets: what is explained in each image (fg_onnx.targets)


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)) or values[2] <= values[0] \
            or values[3] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected a box x0,y0,x1,y1 with x0 < x1 and "
                                         f"y0 < y1, got {text!r}")
    return values


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """What is explained in each image, for every task (README: Task targets)."""
    from fg_onnx.targets.base import TASK_CHOICES
    from fg_onnx.targets.detection import BOX_FORMATS, BOX_SCALES, DETECTION_FORMATS
    from fg_onnx.targets.embedding import SIMILARITIES

    group = parser.add_argument_group("targets (what is explained in each image)")
    group.add_argument("--task", choices=TASK_CHOICES, default="auto",
                       help="auto (default): from the explained output's shape and the graph")
    group.add_argument("--top-k", type=positive_int, metavar="K",
                       help="explain the K best classes / detections / regions, one map each")
    group.add_argument("--label", metavar="NAME",
                       help="the class to explain, by its name (--labels or the model's "
                            "fg_onnx.labels metadata)")
    group.add_argument("--labels", type=Path, metavar="FILE",
                       help="class names, one a line (default: the model's metadata)")
    group.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1",
                       help="in the image's pixels: detection explains the detection that "
                            "overlaps it most; segmentation explains this region")
    group.add_argument("--mask", type=Path, metavar="FILE",
                       help="segmentation: the region to explain (nonzero pixels; resized, "
                            "nearest)")
    group.add_argument("--threshold", type=_probability, metavar="P",
                       help="detection: the least class probability (default 0.25); one "
                            "probability map: the mask threshold (default 0.5)")
    group.add_argument("--iou", type=_probability, default=0.45, metavar="T",
                       help="detection: NMS overlap (default 0.45)")
    group.add_argument("--detection-format", choices=DETECTION_FORMATS, default="auto",
                       help="detection: yolov8 [N, 4+C, A], yolov5 [N, A, 5+C], detr "
                            "([N, Q, C+1] logits beside [N, Q, 4] boxes) or ssd ([N, A, C] "
                            "class scores beside [N, A, 4] boxes) (default: from the outputs' "
                            "shapes and graph)")
    group.add_argument("--box-format", choices=BOX_FORMATS, default="auto",
                       help="detection, ssd/detr boxes: xyxy, yxyx (TF Object Detection API) "
                            "or cxcywh (default: detr cxcywh; ssd xyxy, or cxcywh where the "
                            "boxes are a Sigmoid's)")
    group.add_argument("--box-scale", choices=BOX_SCALES, default="auto",
                       help="detection, ssd/detr boxes: pixels of the model input or "
                            "normalised (fractions of it) (default: detr normalised; ssd "
                            "normalised where every coordinate is within ±2)")
    group.add_argument("--alphabet", type=Path, metavar="FILE",
                       help="sequence: the characters, one a line (default: the model's "
                            "fg_onnx.alphabet metadata, else class indices)")
    group.add_argument("--blank", type=int, default=0, metavar="K",
                       help="sequence: the CTC blank class (default 0)")
    add_sequence_layout_option(group)
    group.add_argument("--time-step", type=int, metavar="T",
                       help="sequence: explain this step's class (--target, default its "
                            "arg-max) instead of each decoded character")
    group.add_argument("--reference", type=Path, metavar="IMAGE|NPY",
                       help="embedding: the reference, another image or a .npy vector")
    group.add_argument("--similarity", choices=SIMILARITIES, default="cosine",
                       help="embedding: cosine (default) or dot")


def add_sequence_layout_option(group: argparse._ActionsContainer) -> None:
    """``--sequence-layout``: a targets option, and augment's with --seed-input (the seed's
    batch axis is built into the graph)."""
    group.add_argument("--sequence-layout", choices=SEQUENCE_LAYOUTS, default="auto",
                       help="sequence: ntc [N, T, C] or tnc [T, N, C] (time first: a "
                            "seq-first LSTM) (default: from the graph)")


def uses_targets(args: argparse.Namespace) -> bool:
    """Whether the run names anything beyond today's one class per image."""
    given = (args.top_k, args.label, args.labels, args.box, args.mask, args.threshold,
             args.alphabet, args.time_step, args.reference)
    chosen = (args.detection_format, args.box_format, args.box_scale, args.sequence_layout)
    return args.task not in ("auto", "classification") or any(v is not None for v in given) \
        or any(v != "auto" for v in chosen)


def read_lines(path: Path, what: str) -> list[str]:
    """A names file: one a line, blank lines at the end dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FgOnnxError(f"cannot read the {what} file {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FgOnnxError(f"the {what} file {path} is empty")
    return lines
