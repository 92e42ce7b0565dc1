"""Ground-truth regions for the localisation metrics: mask images, or COCO-style boxes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fg_onnx.errors import FgOnnxError
from fg_onnx.vision.images import IMAGE_EXTENSIONS, load_image

Mask = np.ndarray
"""bool [H, W], True on the object."""


def masks_from_folder(folder: Path, images: Sequence[Path]) -> list[Mask | None]:
    """Per image, the mask image in ``folder`` with the image's stem (any image type; nonzero
    = object), or None where there is none."""
    if not folder.is_dir():
        raise FgOnnxError(f"--masks {folder} is not a folder")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(path.stem.casefold(), path)
    found: list[Mask | None] = []
    for image in images:
        mask_file = by_stem.get(image.stem.casefold())
        found.append(None if mask_file is None else load_image(mask_file).max(axis=2) > 0)
    return found


def masks_from_boxes(path: Path, images: Sequence[Path],
                     sizes: Sequence[tuple[int, int]]) -> list[Mask | None]:
    """Per image (matched by file name), the union of its COCO ``bbox`` rectangles ([x, y,
    width, height] in the image's pixels) as a mask of the image's ``sizes`` (H, W); None for
    an image the file does not list."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        ids = {Path(str(entry["file_name"])).name.casefold(): entry["id"]
               for entry in document["images"]}
        boxes: dict[object, list[list[float]]] = {}
        for annotation in document["annotations"]:
            boxes.setdefault(annotation["image_id"], []).append(
                [float(v) for v in annotation["bbox"]])
    except OSError as exc:
        raise FgOnnxError(f"cannot read --boxes {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FgOnnxError(f"--boxes {path} is not COCO-style JSON (images with id and "
                          f"file_name, annotations with image_id and bbox): {exc}") from None
    found: list[Mask | None] = []
    for image, (height, width) in zip(images, sizes, strict=True):
        key = ids.get(image.name.casefold())
        if key is None:
            found.append(None)
            continue
        mask = np.zeros((height, width), np.uint8)
        for x, y, w, h in (b[:4] for b in boxes.get(key, []) if len(b) >= 4):
            corner = (int(np.floor(x)), int(np.floor(y)))
            far = (int(np.ceil(x + w)) - 1, int(np.ceil(y + h)) - 1)
            cv2.rectangle(mask, corner, far, 1, thickness=-1)
        found.append(mask > 0)
    return found


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> Mask:
    """``mask`` (nonzero = object) as a bool [H, W] of ``size``, nearest neighbour so that it
    stays binary."""
    binary = np.asarray(mask) != 0
    if binary.shape == size:
        return np.asarray(binary)
    resized = cv2.resize(binary.astype(np.uint8), (size[1], size[0]),
                         interpolation=cv2.INTER_NEAREST)
    return np.asarray(resized > 0)
