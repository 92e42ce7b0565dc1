"""``fg-onnx augment`` end to end, in-process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from torch_models import ResidualCNN, export

from fg_onnx.cli.main import main

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export(ResidualCNN(softmax=True), tmp_path_factory.mktemp("cli") / "net.onnx")


def test_writes_default_output_and_summary(model_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "net.onnx"
    source.write_bytes(model_path.read_bytes())
    original = source.read_bytes()
    assert main(["augment", str(source)]) == 0
    out = capsys.readouterr().out
    assert "explained input: image (NCHW)" in out
    assert "logits before its Softmax" in out
    assert "bias taps:" in out and "new outputs: fg_score" in out
    written = tmp_path / "net.fg.onnx"
    onnx.checker.check_model(onnx.load(str(written)), full_check=True)
    assert source.read_bytes() == original
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_refuses_existing_output_without_force(model_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.onnx"
    target.write_bytes(b"keep me")
    assert main(["augment", str(model_path), "-o", str(target)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main(["augment", str(model_path), "-o", str(target), "--force"]) == 0
    assert target.read_bytes() != b"keep me"


def test_never_overwrites_the_input(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = model_path.read_bytes()
    assert main(["augment", str(model_path), "-o", str(model_path), "--force"]) == 2
    assert "refusing to overwrite the input model" in capsys.readouterr().err
    assert model_path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "model file is empty"), (b"\x89PNG\r\n\x1a\n0000", "not a valid ONNX model")],
)
def test_bad_model_files_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       content: bytes, message: str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert main(["augment", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "shapes_cnn.onnx"


@pytest.mark.parametrize(("flags", "unpool"), [([], False), (["--provider", "any"], False),
                                               (["--provider", "cpu"], True)])
def test_provider_decides_cpu_only_ops(tmp_path: Path, flags: list[str], unpool: bool,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shapes.fg.onnx"
    assert main(["augment", str(SAMPLE), "-o", str(out), *flags]) == 0
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("MaxUnpool" in ops) is unpool and ("ScatterElements" in ops) is not unpool


def test_unknown_provider_is_a_usage_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["augment", str(SAMPLE), "-o", str(tmp_path / "x.onnx"),
                 "--provider", "cuda"]) == 2
    assert "invalid choice: 'cuda'" in capsys.readouterr().err


def test_precision_float16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shapes.fg.onnx"
    assert main(["augment", str(SAMPLE), "-o", str(out), "--precision", "float16",
                 "--gradient-scale", "1024"]) == 0
    model = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    facts = json.loads(next(p.value for p in model.metadata_props
                            if p.key == "fg_onnx.augment"))
    assert (facts["precision"], facts["gradient_scale"]) == ("float16", 1024)


@pytest.mark.parametrize(("flags", "message"), [
    (["--gradient-scale", "2"], "fg-onnx: error: --gradient-scale applies to --precision "
                                "float16 only\n"),
    (["--precision", "float16", "--gradient-scale", "-1"],
     "fg-onnx: error: the gradient scale must be a positive number, got -1.0\n"),
])
def test_bad_gradient_scale_is_one_line(tmp_path: Path, flags: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["augment", str(SAMPLE), "-o", str(tmp_path / "x.onnx"), *flags]) == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "x.onnx").exists()


def test_seed_input_sequence_layout_is_recorded_and_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from target_models import exported_time_first_ctc

    from fg_onnx.fullgrad.contract import read_facts

    ctc = exported_time_first_ctc(tmp_path / "tnc.onnx")
    written = tmp_path / "tnc.fg.onnx"
    assert main(["augment", str(ctc), "-o", str(written), "--seed-input",
                 "--sequence-layout", "tnc"]) == 0
    facts = read_facts(onnx.load(str(written)))
    assert facts.batch_axes == {"out": 1, facts.scores: 1}  # [T, N, C]: the batch at axis 1
    line = tmp_path / "line.png"
    cv2.imwrite(str(line), np.random.default_rng(5).integers(0, 256, (8, 16, 3), np.uint8))
    capsys.readouterr()
    for argv in (["augment", str(ctc), "-o", str(tmp_path / "ntc.fg.onnx"), "--seed-input",
                  "--sequence-layout", "ntc"],
                 ["explain", str(written), str(line), "-o", str(tmp_path / "bad"), "--size",
                  "8x16", "--sequence-layout", "ntc", "--device", "cpu"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--sequence-layout ntc contradicts the graph" in err[0]
    assert not (tmp_path / "ntc.fg.onnx").exists() and not (tmp_path / "bad").exists()
