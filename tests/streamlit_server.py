"""Start the dashboard as ``streamlit run dashboard/Home.py`` and wait until it answers (shared by the tests that serve it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int, *flags: str, timeout: float = 90, env: dict | None = None) -> subprocess.Popen:
    """The server on ``port`` (headless, plus ``flags``; ``env`` added to this process's), once its health check
    answers; killed if it never does."""
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port),
                                "--server.headless", "true", *flags], cwd=REPO, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError("streamlit did not come up on 127.0.0.1") from None
            time.sleep(0.5)


def fill_tiny_launch(page, sidebar, epochs: int, images: int) -> None:
    """Pick a tiny teacher run in the real sidebar (Playwright): MesoNet, ``epochs`` epochs of at most ``images``
    training images, batch 16; the Launch button is left to the caller."""
    for label, option in (("Method", "teacher"), ("Architecture", "mesonet")):
        sidebar.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
        page.get_by_role("option", name=option, exact=True).click()
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)  # the rerun after the last pick has settled (no stale copy of the sidebar)
    sidebar.get_by_text("Hyperparameters (empty = the preset's)").first.click()
    for label, value in (("Epochs", str(epochs)), ("Batch size", "16"), ("Max training images (a quick look)", str(images))):
        field = sidebar.get_by_label(label, exact=True).first
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(500)
