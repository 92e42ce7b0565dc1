"""Progress lines: redrawn on a terminal, one final line per task elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fg_onnx.cli.main import main
from fg_onnx.cli.progress import MethodProgress, Progress

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def test_a_log_gets_one_line_per_task_and_a_terminal_the_bar() -> None:
    log, terminal = io.StringIO(), io.StringIO()
    for stream, live in ((log, False), (terminal, True)):
        progress = Progress(5, "maps", stream=stream, live=live)
        for _ in range(5):
            progress.advance()
        progress.finish()  # once only
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()
    assert "maps [" in log.getvalue() and "5/5 images" in log.getvalue()
    assert terminal.getvalue().count("\r") == 5 and terminal.getvalue().count("\n") == 1
    assert "3/5 images" in terminal.getvalue()


def test_evaluate_reports_each_method(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = io.StringIO()
    methods = MethodProgress(stream=log, live=False)
    for method in ("random", "gradient"):
        for done in (0, 1, 2):
            methods(method, done, 2)
    lines = log.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["random", "gradient"]
    assert all("2/2 images" in line for line in lines)
    assert main(["evaluate", str(SAMPLE), str(IMAGES / "circle.png"), str(IMAGES / "cross.jpg"),
                 "--methods", "gradient,grad-cam", "--k", "1", "--deletion-steps", "2",
                 "-o", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[0] for line in err if "2/2 images" in line] == \
        ["random", "gradient", "grad-cam"]
