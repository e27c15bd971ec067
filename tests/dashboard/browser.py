"""Headless Chromium (Debian `chromium`) driven by Playwright's Python API.

Never `playwright install`: we launch the system browser by path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"


def chromium_path() -> str:
    """The system Chromium, or skip with the way to install it."""
    path = os.environ.get("WSFLEET_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.skip(
            "browser test needs Debian's chromium: "
            "apt-get install -y --no-install-recommends chromium (hack/install-deps.sh)"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("browser test needs playwright (pip install -e '.[dev]')")
    return path


@asynccontextmanager
async def browser_page(width: int = 1440, height: int = 900) -> AsyncIterator[Any]:
    """A fresh page in a fresh headless Chromium; everything closed afterwards."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            page.set_default_timeout(60_000)
            yield page
            await context.close()
        finally:
            await browser.close()


def screenshot_path(name: str) -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR / f"{name}.png"
