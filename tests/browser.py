"""Headless Chromium for report tests: the page's DOM after its scripts ran, a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000", "--window-size=1400,1000")


def browser() -> str:
    """The Chromium executable; skips the test where there is none."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium to open the report in (apt-get install chromium)")


def _run(page: Path, query: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory(prefix="fg_onnx_chromium_") as profile:
        done = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *extra,
                               page.resolve().as_uri() + query],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(page: Path, query: str = "") -> str:
    """The DOM once the page has loaded and its scripts have run."""
    return _run(page, query, "--dump-dom")


def screenshot(page: Path, picture: Path, query: str = "") -> None:
    """A PNG of the page as Chromium renders it."""
    _run(page, query, f"--screenshot={picture}")
    assert picture.stat().st_size > 0
