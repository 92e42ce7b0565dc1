"""What ``explain`` and ``evaluate`` write, by name (the per-image files: fg_onnx.files), and the
recognition of earlier results (so that a second run does not explain the first one's images)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fg_onnx.errors import FgOnnxError
from fg_onnx.files import make_folder
from fg_onnx.methods import METHOD_NAMES

EVALUATION_FILES = ("evaluation.md", "evaluation.json", "evaluation.png")
SANITY_FILES = ("sanity.md", "sanity.json", "sanity.png", "sanity_grid.png")
RESULT_IMAGES = frozenset(name for name in (*EVALUATION_FILES, *SANITY_FILES)
                          if name.endswith(".png"))


def is_result_name(name: str) -> bool:
    """Whether ``name`` is that of an image explain, evaluate or sanity writes (with any
    method)."""
    return name in RESULT_IMAGES or any(name.endswith(f"_{method}.png")
                                        for method in METHOD_NAMES)


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[None]:
    """Creates ``path`` (and missing parents) for a run; when the run fails, removes what it
    created as long as nothing was written there, so a failed run leaves no empty folder."""
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    make_folder(path)
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first
            try:
                folder.rmdir()  # only an empty folder
            except OSError:
                break
        raise


def check_outdir(outdir: Path, names: tuple[str, ...], force: bool) -> None:
    """Refuses an ``outdir`` that is a file, or that holds one of ``names`` without
    ``force``, before any work."""
    if outdir.exists() and not outdir.is_dir():
        raise FgOnnxError(f"output path {outdir} exists and is not a folder")
    existing = [name for name in names if (outdir / name).exists()]
    if existing and not force:
        raise FgOnnxError(f"{outdir / existing[0]} already exists; pass --force to overwrite "
                          "or choose -o")
