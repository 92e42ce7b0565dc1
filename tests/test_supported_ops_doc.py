"""docs/supported_ops.md must match the rule registry; tools/gen_supported_ops.py regenerates it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fg_onnx.grad import REGISTRY

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gen_supported_ops.py"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_supported_ops", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_doc_is_current(tool: ModuleType) -> None:
    assert tool.DOC_PATH.read_text(encoding="utf-8") == tool.render(), (
        "docs/supported_ops.md is stale: run python tools/gen_supported_ops.py"
    )


def test_every_entry_is_listed(tool: ModuleType) -> None:
    text = tool.render()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(REGISTRY.entries()) + 1  # plus the header row
    for entry in REGISTRY.entries():
        gradient = "yes" if entry.rule is not None else "gradient-free"
        assert any(
            row.startswith(f"| {entry.op_type} | {entry.domain or 'ai.onnx'} |")
            and f"| {gradient} |" in row
            for row in rows
        ), entry.op_type


def test_check_mode_detects_stale_file(tool: ModuleType, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ops.md"
    assert tool.main(["--check", "--output", str(path)]) == 1  # missing file
    assert tool.main(["--output", str(path)]) == 0
    assert tool.main(["--check", "--output", str(path)]) == 0
    path.write_text(path.read_text(encoding="utf-8").replace("| Relu |", "| Relu6 |"),
                    encoding="utf-8")
    assert tool.main(["--check", "--output", str(path)]) == 1
    assert "stale" in capsys.readouterr().err
