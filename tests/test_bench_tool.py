"""Smoke test of tools/bench.py on its tiny model (the real runs take minutes)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import bench  # tools/ is on pytest's pythonpath
import bench_run
import bench_table
import pytest

pytest.importorskip("torch", reason="tools/bench.py exports torch models")


MAY_BE_ZERO = ("rewrite mem/model size", "ref diff", "completeness")


def _numbers(cell: str) -> list[float]:
    return [float(part) for part in cell.split("/")]


def test_tiny_run_prints_a_complete_table(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(["--models", "tiny", "--batch-sizes", "1", "--repeats", "1",
                       "--out", str(out)])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == bench_table.COLUMNS
    cells = dict(zip(header, (c.strip() for c in lines[2].strip("|").split("|")), strict=True))
    assert cells["model"] == "tiny" and cells["batch"] == "1"
    for column in header[2:]:
        for value in _numbers(cells[column]):
            assert math.isfinite(value), (column, cells[column])
            # A rewrite may fit in memory already mapped; two maps may agree exactly.
            assert value >= 0 if column in MAY_BE_ZERO else value > 0, (column, cells[column])
    row = json.loads(out.read_text())["rows"][0]
    assert row["ref_diff"] < 1e-4  # fg-onnx and the PyTorch reference compute the same map
    assert row["completeness"] < 1e-4
    assert row["saliency_over_forward"] > 0 and row["reference_over_saliency"] > 0


def test_missing_torchvision_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert bench.main(["--models", "resnet50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchvision is not installed" in err[0]


def test_float16_run_times_float16_against_float16(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "tiny", "--batch-sizes", "2", "--repeats", "1",
                       "--skip-reference", "--precision", "float16", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["precision"] == "float16"
    assert 0 < row["completeness"] < 1e-2  # float16 rounding, not float32's 1e-7
    assert row["saliency_over_forward"] > 0


def test_baseline_run_compares_two_checkouts(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # This checkout as its own baseline: the same graph, so the maps agree and both are timed.
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "tiny", "--batch-sizes", "1", "--repeats", "2",
                       "--skip-reference", "--baseline", str(bench_run.CHECKOUT),
                       "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = tuple(c.strip() for c in lines[3].strip("|").split("|"))
    assert header == bench_table.COMPARISON_COLUMNS
    cells = dict(zip(header, (c.strip() for c in lines[5].strip("|").split("|")), strict=True))
    assert cells["model"] == "tiny" and float(cells["saliency new/baseline"]) > 0
    baseline = json.loads(out.read_text())["rows"][0]["baseline"]
    assert baseline["map_diff"] < 1e-6 and baseline["completeness"] < 1e-4
    assert baseline["saliency_ms"] > 0 and baseline["augment_s"] > 0


def test_baseline_without_fg_onnx_is_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--models", "tiny", "--baseline", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no fg_onnx package there" in err[0]
