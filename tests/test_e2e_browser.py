"""End to end in a real browser: streamlit server + headless Chromium via Playwright.

Uploads a shipped sample on the Classify page through the real file input and
waits for the label and the heatmap. CI installs Chromium with
``apt-get install -y chromium chromium-driver``; ``playwright install`` is not
used (no downloads), the system browser is driven instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lungct import CLASSES

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "reports" / "e2e" / "classify.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]
START_TIMEOUT_S = 120
RESULT_TIMEOUT_MS = 240_000  # model load, pytorch-grad-cam import and CAM on a busy CPU

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs /usr/bin/chromium "
                                       "(apt-get install -y chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(models_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "LUNGCT_MODELS": str(models_dir),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"}
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("streamlit did not become healthy in time")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_classify_upload_in_browser(server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=RESULT_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(RESULT_TIMEOUT_MS)
            page.goto(f"{server}/classify", wait_until="domcontentloaded")
            expect(page.get_by_text("Classify CT slices")).to_be_visible()
            page.set_input_files("input[type=file]", str(ROOT / "samples" / "malignant_1.jpg"))
            label = page.locator('[data-testid="stMetricValue"]').first
            expect(label).to_be_visible()
            assert label.inner_text().strip() in CLASSES
            expect(page.get_by_text("File 1 of 1 (.jpg)").first).to_be_visible()
            heatmap = page.locator('[data-testid="stImage"]', has_text="Grad-CAM, class")
            expect(heatmap.locator("img")).to_be_visible()
            expect(page.get_by_text("Download case report")).to_be_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
            # results name an upload by position and extension only, never by its file name
            # (the uploader's own file list is the browser showing the user's choice)
            shown = page.locator('[data-testid="stMain"]').inner_text()
            own = page.locator('[data-testid="stFileUploader"]').inner_text()
            assert "malignant_1" not in shown.replace(own, "")
            heatmap.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
