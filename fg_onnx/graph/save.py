"""Writing models atomically, never over the user's input, with external data when large."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fg_onnx.errors import FgOnnxError, OutputExistsError
from fg_onnx.files import temp_file_beside
from fg_onnx.graph.load import external_data_paths

# Protobuf cannot serialise 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: Path, force: bool, model: Path) -> None:
    """Refuses to write over the input ``model`` or a file it needs, or over an existing file
    without ``force``."""
    written = [w for w in (path, data_file_of(path)) if w.exists()]
    needed = [(model, "the input model")]
    if written:  # only an existing file can be one the model needs (spares a second parse)
        needed += [(data, "the input model's external data")
                   for data in external_data_paths(model)]
    for source, what in needed:
        for target in written:
            if target.resolve() == source.resolve() or _same_file(target, source):
                raise OutputExistsError(f"refusing to overwrite {what} {source}")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise OutputExistsError(f"{path} is a directory")
    if not path.parent.exists():
        raise FgOnnxError(f"output directory does not exist: {path.parent}")


def data_file_of(path: Path) -> Path:
    """Where the tensors of a large model written to ``path`` go."""
    return path.with_name(f"{path.name}.data")


def is_large(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is too large to serialise in one protobuf (over the threshold)."""
    try:
        return bool(model.ByteSize() > EXTERNAL_DATA_THRESHOLD)
    except ValueError:
        return True


# Tensors bigger than this are replaced by stubs in :func:`without_weights`; shape tensors and
# other constants that inference reads stay.
STUB_MIN_BYTES = 1024
STUB_LOCATION = "fg_onnx_stub.data"


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers are external-data stubs (same name, type
    and dims, no data), small enough for onnx.checker and shape inference of large models."""
    stripped = onnx.ModelProto()
    for descriptor, value in model.ListFields():
        if descriptor.name != "graph":
            _copy_field(stripped, descriptor, value)
    for descriptor, value in model.graph.ListFields():
        if descriptor.name != "initializer":
            _copy_field(stripped.graph, descriptor, value)
    for tensor in model.graph.initializer:
        stripped.graph.initializer.append(
            _stub(tensor) if tensor.ByteSize() > STUB_MIN_BYTES else tensor
        )
    return stripped


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker on ``model``'s weightless copy, saved with an empty stub data file (the
    checker insists that external data files exist, not on their size).

    Raises:
        onnx.checker.ValidationError: the model is invalid.
    """
    # Always on the weightless copy: the checker serialises the whole model otherwise, which
    # doubled the rewrite's memory peak.
    with tempfile.TemporaryDirectory(prefix="fg_onnx_check_") as folder:
        (Path(folder) / STUB_LOCATION).touch()
        path = Path(folder) / "model.onnx"
        path.write_bytes(without_weights(model).SerializeToString())
        onnx.checker.check_model(str(path), full_check=full_check)


def _copy_field(target: Message, descriptor: FieldDescriptor, value: object) -> None:
    # ``is_repeated`` replaced ``label`` in protobuf 6.
    repeated = getattr(descriptor, "is_repeated", None)
    if repeated is None:
        repeated = descriptor.label == FieldDescriptor.LABEL_REPEATED
    if repeated:
        getattr(target, descriptor.name).extend(value)
    elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, descriptor.name).CopyFrom(value)
    else:
        setattr(target, descriptor.name, value)


def _stub(tensor: onnx.TensorProto) -> onnx.TensorProto:
    stub = onnx.TensorProto(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type,
                            data_location=onnx.TensorProto.EXTERNAL)
    stub.external_data.add(key="location", value=STUB_LOCATION)
    return stub


def save_model_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Writes ``model`` to ``path`` through a temporary file and a rename, so an interrupted
    run leaves either the old file or the complete new one. Models over 2 GB get their
    tensors in ``<name>.data`` beside the output (``model`` then refers to that file)."""
    large = is_large(model)
    tmp: Path | None = None
    data_tmp: Path | None = None
    try:
        tmp = temp_file_beside(path)
        if large:
            data_name = data_file_of(path).name
            data_tmp = temp_file_beside(path.parent / data_name)  # onnx appends to it
            onnx.save_model(model, str(tmp), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_tmp.name,
                            size_threshold=1024)
            _point_at(model, data_name)
            onnx.save_model(model, str(tmp))  # the graph again, naming the final data file
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


def _point_at(model: onnx.ModelProto, data_name: str) -> None:
    """Points the model's external-data entries at the final data file name."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
