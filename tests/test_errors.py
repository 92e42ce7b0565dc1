"""one_line: every message the user sees from a foreign exception is one line."""

from __future__ import annotations

import pytest

from fg_onnx.errors import one_line


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Field 'shape' of 'type' is required\nbut missing.\n\n==> Context: node 3",
         "Field 'shape' of 'type' is required but missing."),
        ("[ONNXRuntimeError] : 1 : FAIL : bad\nStacktrace:\n#0 frame",
         "[ONNXRuntimeError] : 1 : FAIL : bad"),
        ("failed\nTraceback (most recent call last):\n  File x", "failed"),
        ("  spaced \t out  ", "spaced out"),
        ("", "RuntimeError"),
    ],
)
def test_one_line(message: str, expected: str) -> None:
    assert one_line(RuntimeError(message)) == expected


def test_one_line_shortens() -> None:
    text = one_line(ValueError("word " * 200), limit=50)
    assert len(text) == 50 and text.endswith("...") and "\n" not in text
