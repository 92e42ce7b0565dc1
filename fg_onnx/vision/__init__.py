"""Images in and out: loading files, building model inputs, drawing saliency overlays."""

from fg_onnx.vision.images import IMAGE_EXTENSIONS, MAX_PIXELS, iter_image_paths, load_image
from fg_onnx.vision.overlay import colorize, overlay_heatmap, save_png
from fg_onnx.vision.preprocess import PRESETS, Preprocess, preprocess_batch, preset

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "PRESETS",
    "Preprocess",
    "colorize",
    "iter_image_paths",
    "load_image",
    "overlay_heatmap",
    "preprocess_batch",
    "preset",
    "save_png",
]
