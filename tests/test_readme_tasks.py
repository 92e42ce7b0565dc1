"""Every `fg-onnx explain sample_models/...` command of README's task section runs as
printed (parsed as tools/task_pictures.py parses them), together covering every task, and
each picture it names is in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from task_pictures import task_examples  # tools/ is on pytest's pythonpath

from fg_onnx.cli.main import main
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.targets.base import TASKS
from fg_onnx.targets.run import plan_task

ROOT = Path(__file__).parents[1]
EXAMPLES = task_examples((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_task_section_has_an_example_and_a_picture_per_task() -> None:
    assert len(EXAMPLES) >= len(TASKS)
    pictures = [e.picture for e in EXAMPLES if e.picture is not None]
    assert len(pictures) >= len(TASKS)
    for picture in pictures:
        assert picture.suffix == ".png" and (ROOT / picture).stat().st_size <= 100 * 1024


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_every_task_example_runs(index: int, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the commands name the samples relative to the repository root
    example = EXAMPLES[index]
    out = tmp_path / "out"
    assert main([*example.with_outdir(out), "--device", "cpu"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert rows and all(row["map"] is not None and row["finite"] for row in rows)
    assert all(row["completeness_error"] < 1e-4 for row in rows)


def test_the_examples_cover_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    found = {plan_task(example.argv[1], example.option("--task") or "auto",
                       AugmentOptions(output=example.option("--output")))
             for example in EXAMPLES}
    assert found == set(TASKS)
