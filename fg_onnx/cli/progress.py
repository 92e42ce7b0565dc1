"""Progress on stderr: a bar redrawn in place on a terminal; elsewhere (CI logs, pipes) only
each task's final line, so that logs get one line per task, not one per update."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """One task's bar: ``advance`` or ``update`` it, ``finish`` prints its final line."""

    def __init__(self, total: int, label: str = "", unit: str = "images", *,
                 stream: TextIO | None = None, live: bool | None = None) -> None:
        self.total, self.done = total, 0
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.perf_counter()
        self.finished = False

    def _line(self) -> str:
        filled = int(WIDTH * self.done / max(self.total, 1))
        label = f"{self.label} " if self.label else ""
        return (f"{label}[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} "
                f"{self.unit}, {time.perf_counter() - self.started:.1f} s")

    def update(self, done: int) -> None:
        """Sets how many are done; the last one finishes the task."""
        self.done = min(done, self.total)
        if self.done >= self.total:
            self.finish()
        elif self.live:
            print(f"\r{self._line()}", end="", file=self.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        """``n`` more done."""
        self.update(self.done + n)

    def finish(self) -> None:
        """The final line (once)."""
        if self.finished:
            return
        self.finished = True
        print(f"\r{self._line()}" if self.live else self._line(), file=self.stream, flush=True)


def status(text: str, *, stream: TextIO | None = None) -> None:
    """A passing note (what a slow step is doing), on a terminal only."""
    stream = stream or sys.stderr
    if stream.isatty():
        print(text, file=stream, flush=True)


class MethodProgress:
    """evaluate's progress: one bar per method (``fg_onnx.evaluation.run.Progress``)."""

    def __init__(self, *, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream, self.live = stream, live
        self.current: Progress | None = None
        self.width = 0

    def __call__(self, method: str, done: int, total: int) -> None:
        """Called as the tests of ``method`` proceed."""
        if self.current is None or self.current.label.strip() != method:
            if self.current is not None:
                self.current.finish()
            self.width = max(self.width, len(method), 20)
            self.current = Progress(total, method.ljust(self.width), stream=self.stream,
                                    live=self.live)
        self.current.update(done)
