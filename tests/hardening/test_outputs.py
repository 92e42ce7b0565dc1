"""Outputs: never over the input, never over existing files without --force, atomic writes,
external data beside large outputs, and large models that never serialise whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fg_onnx.graph import save as save_module
from fg_onnx.runtime.session import FullGrad
from hardening.support import (
    IMAGES,
    SAMPLE,
    assert_clean_failure,
    assert_one_line_error,
    only_file,
    run_cli,
)

CHECK_MODEL = onnx.checker.check_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    copy = tmp_path / "in" / "net.onnx"
    copy.parent.mkdir()
    copy.write_bytes(SAMPLE.read_bytes())
    return copy


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_never_overwrites_the_input(model: Path, capsys: pytest.CaptureFixture[str],
                                    spelling: str) -> None:
    before = model.read_bytes()
    target = {"same": model, "dotted": model.parent / "." / model.name,
              "symlink": model.parent / "link.onnx", "hardlink": model.parent / "hard.onnx"}
    if spelling == "symlink":
        target[spelling].symlink_to(model)
    if spelling == "hardlink":
        os.link(model, target[spelling])
    assert_clean_failure(["augment", model, "-o", target[spelling], "--force"], capsys,
                         "refusing to overwrite the input model")
    assert model.read_bytes() == before


def test_existing_output_needs_force(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = model.parent / "net.fg.onnx"
    out.write_bytes(b"mine")
    assert_clean_failure(["augment", model], capsys, "already exists", "--force")
    assert out.read_bytes() == b"mine"
    assert run_cli(["augment", model, "--force"], capsys)[0] == 0
    CHECK_MODEL(str(out), full_check=True)


def test_output_folder_missing_or_a_directory(model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(["augment", model, "-o", tmp_path / "no" / "m.onnx"], capsys,
                         "output directory does not exist")
    (tmp_path / "d.onnx").mkdir()
    assert_clean_failure(["augment", model, "-o", tmp_path / "d.onnx", "--force"], capsys,
                         "is a directory")
    (tmp_path / "file").write_text("x")
    assert_clean_failure(["explain", model, SAMPLE.parent / "images", "-o", tmp_path / "file"],
                         capsys, "exists and is not a folder")


@pytest.mark.parametrize(("failure", "code", "message"), [
    (KeyboardInterrupt(), 130, "fg-onnx: interrupted"),
    (OSError(28, "No space left on device"), 2, "fg-onnx: error: could not write"),
])
def test_interrupted_write_leaves_the_old_file_and_no_temporary(
        model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        failure: BaseException, code: int, message: str) -> None:
    out = model.parent / "out.onnx"
    out.write_bytes(b"previous result")

    def half_written(proto: onnx.ModelProto, path: str, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(proto.SerializeToString()[:100])
        raise failure

    monkeypatch.setattr(onnx, "save_model", half_written)
    got, _, err = run_cli(["augment", model, "-o", out, "--force"], capsys)
    assert got == code and err.startswith(message) and err.count("\n") == 1, err
    assert out.read_bytes() == b"previous result"
    assert only_file(model.parent) == ["net.onnx", "out.onnx"]


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every model counts as over 2 GB, and whole-model serialisation of a model with weights
    (what fails over 2 GB) is an error."""
    monkeypatch.setattr(save_module, "EXTERNAL_DATA_THRESHOLD", 0)

    def weightless(model: Any) -> None:
        if isinstance(model, onnx.ModelProto):
            heavy = [t.name for t in model.graph.initializer
                     if t.ByteSize() > save_module.STUB_MIN_BYTES]
            assert not heavy, f"whole model serialised with weights {heavy[:3]}"

    def guard(original: Any) -> Any:
        def guarded(model: Any, *args: Any, **kwargs: Any) -> Any:
            weightless(model)
            return original(model, *args, **kwargs)
        return guarded

    monkeypatch.setattr(onnx.checker, "check_model", guard(onnx.checker.check_model))
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes",
                        guard(onnx.shape_inference.infer_shapes))

    class PathOnlySession(ort.InferenceSession):  # type: ignore[misc]
        def __init__(self, source: Any, *args: Any, **kwargs: Any) -> None:
            assert isinstance(source, str), "a large model must reach onnxruntime as a path"
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", PathOnlySession)
    yield


def _explain(model: Any) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    return FullGrad(model, device="cpu").explain(x).saliency


@pytest.mark.usefixtures("large")
def test_large_model_gets_external_data_beside_the_output(
        model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    external = model.parent / "ext.onnx"
    onnx.save(onnx.load(str(model)), str(external), save_as_external_data=True,
              location="ext.weights", size_threshold=0)
    out = model.parent / "ext.fg.onnx"
    code, _, err = run_cli(["augment", external], capsys)
    assert code == 0, err
    assert only_file(model.parent) == ["ext.fg.onnx", "ext.fg.onnx.data", "ext.onnx",
                                       "ext.weights", "net.onnx"]
    stored = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    CHECK_MODEL(str(out), full_check=True)
    assert out.stat().st_size < (model.parent / "ext.fg.onnx.data").stat().st_size
    # the large paths give the same maps as the ordinary ones
    np.testing.assert_allclose(_explain(out), _explain(model), rtol=1e-5, atol=1e-6)


def test_large_model_augmented_in_memory_matches(model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    want = _explain(model)
    with monkeypatch.context() as patch:
        patch.setattr(save_module, "EXTERNAL_DATA_THRESHOLD", 0)
        got = _explain(model)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_data_file_of_the_input_is_protected(model: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    source = model.parent / "a.onnx"
    onnx.save(onnx.load(str(model)), str(source), save_as_external_data=True,
              location="b.onnx.data", size_threshold=0)
    before = (model.parent / "b.onnx.data").read_bytes()
    assert_clean_failure(["augment", source, "-o", model.parent / "b.onnx", "--force"],
                         capsys, "refusing to overwrite the input model")
    assert (model.parent / "b.onnx.data").read_bytes() == before


@pytest.mark.parametrize("spelling", ["data", "dotted", "symlink"])
def test_external_data_file_of_the_input_is_never_the_output(
        model: Path, capsys: pytest.CaptureFixture[str], spelling: str) -> None:
    source = model.parent / "a.onnx"
    (model.parent / "weights").mkdir()
    onnx.save(onnx.load(str(model)), str(source), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights/a.data", size_threshold=0)
    data = model.parent / "weights" / "a.data"
    before = data.read_bytes()
    target = {"data": data, "dotted": model.parent / "weights" / "." / "a.data",
              "symlink": model.parent / "link.data"}[spelling]
    if spelling == "symlink":
        target.symlink_to(data)
    assert_clean_failure(["augment", source, "-o", target, "--force"], capsys,
                         f"refusing to overwrite the input model's external data {data}")
    assert data.read_bytes() == before


@pytest.mark.parametrize("command", [
    ["explain", SAMPLE, IMAGES / "circle.png"],
    ["evaluate", SAMPLE, IMAGES / "circle.png", "--methods", "gradient", "--k", "10"],
])
def test_output_folder_that_cannot_be_created(tmp_path: Path, command: list[Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli([*command, "-o", tmp_path / "file" / "out"], capsys)
    assert code == 2
    assert_one_line_error(err.splitlines()[-1] + "\n",
                          f"cannot create the output folder {tmp_path / 'file' / 'out'}")


def test_results_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    code, _, err = run_cli(["explain", SAMPLE, IMAGES / "circle.png", "-o", out], capsys)
    assert code == 2
    assert_one_line_error(err.splitlines()[-1] + "\n", f"could not write {out}",
                          "No space left on device")
    assert not out.exists()  # no temporary left, nor the empty folder the run made


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_written_files_get_the_permissions_of_an_ordinary_write(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, umask: int, size: str) -> None:
    if size == "large":
        monkeypatch.setattr(save_module, "EXTERNAL_DATA_THRESHOLD", 0)
    previous = os.umask(umask)
    try:
        assert run_cli(["augment", model, "-o", tmp_path / "m.fg.onnx"], capsys)[0] == 0
        assert run_cli(["explain", model, IMAGES / "circle.png", "-o", tmp_path / "out",
                        "--device", "cpu"], capsys)[0] == 0
    finally:
        os.umask(previous)
    written = [tmp_path / "m.fg.onnx", *(tmp_path / "out").iterdir()]
    if size == "large":
        written.append(tmp_path / "m.fg.onnx.data")
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {
        p.name: oct(0o666 & ~umask) for p in written}
