"""The dashboard: AppTest for the page, then the real server and a real browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


def test_home_renders_without_exceptions(tiny_benchmark):
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "Lightweight deepfake face detection"
    assert [s.value for s in app.subheader] == ["Shipped checkpoints", "Runs", "Embedded synthetic benchmark"]
    assert "300 images at 32 px" in app.markdown[-1].value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_dashboard(tiny_benchmark):
    """``streamlit run dashboard/Home.py`` on 127.0.0.1, as ``make run`` starts it."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("streamlit did not come up on 127.0.0.1")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_server_answers_on_loopback(served_dashboard):
    with urllib.request.urlopen(served_dashboard, timeout=10) as response:
        assert response.status == 200
        assert b"<div id=\"root\">" in response.read()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make install adds it)")
def test_real_browser_shows_the_home_page(served_dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(served_dashboard, wait_until="domcontentloaded")
            page.get_by_text("Lightweight deepfake face detection").wait_for(timeout=60_000)
            page.get_by_text("Embedded synthetic benchmark").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
            exceptions = page.locator("[data-testid='stException']").count()
        finally:
            browser.close()
    assert exceptions == 0


def test_first_launch_generates_the_benchmark_with_progress(tmp_path, monkeypatch):
    from core.data import synthetic

    monkeypatch.setenv("CORE_DATA_DIR", str(tmp_path / "fresh"))
    small = synthetic.SynthConfig(image_size=16, per_source=20)
    original = synthetic.ensure_benchmark
    monkeypatch.setattr(synthetic, "ensure_benchmark", lambda **kw: original(config=small, **kw))  # a small one, fast
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    assert not app.exception
    assert synthetic.read_manifest(tmp_path / "fresh" / "synthetic")["images"] == 100
