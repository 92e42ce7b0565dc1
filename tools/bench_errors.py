"""The benchmark's one error: tools/bench.py prints it as one line and exits 2."""

from __future__ import annotations


class BenchError(Exception):
    """A one-line reason why the benchmark cannot run."""
