"""Writing models atomically, never over the user's input, with external data when large."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import onnx

from fg_onnx.errors import FgOnnxError, OutputExistsError

# Protobuf cannot serialise 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: Path, force: bool, protected: list[Path]) -> None:
    """Refuses to write over an input, or over an existing file without ``force``."""
    for source in protected:
        if path.resolve() == source.resolve() or _same_file(path, source):
            raise OutputExistsError(f"refusing to overwrite the input model {source}")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise OutputExistsError(f"{path} is a directory")
    if not path.parent.exists():
        raise FgOnnxError(f"output directory does not exist: {path.parent}")


def save_model_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Writes ``model`` to ``path`` through a temporary file and a rename, so an interrupted
    run leaves either the old file or the complete new one. Models over 2 GB get their
    tensors in ``<name>.data`` beside the output."""
    large = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if _byte_size_ok(model) else True
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    data_tmp = None
    try:
        if large:
            data_name = f"{path.name}.data"
            data_tmp = path.parent / f".{data_name}.tmp"
            onnx.save_model(model, str(tmp), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_tmp.name,
                            size_threshold=1024)
            _relocate_external_data(tmp, data_name)
            os.replace(data_tmp, path.parent / data_name)
        else:
            onnx.save_model(model, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise FgOnnxError(f"could not write {path}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (tmp, data_tmp):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _byte_size_ok(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
    except ValueError:
        return False
    return True


def _relocate_external_data(model_path: Path, data_name: str) -> None:
    """Points the saved model's external-data entries at the final data file name."""
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    onnx.save_model(model, str(model_path))
