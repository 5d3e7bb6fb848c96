"""Closed by default: the app (no login; its PACS page writes into the PACS) listens on 127.0.0.1.

The shipped config says so, and a started server keeps to it: it answers on
127.0.0.1 and refuses connections on the machine's other addresses. Serving
on a network is an explicit override (README, "The app").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest

from lungct.config import REPO_ROOT

CONFIG = REPO_ROOT / ".streamlit" / "config.toml"


def test_config_binds_to_loopback():
    with open(CONFIG, "rb") as f:
        server = tomllib.load(f)["server"]
    assert server["address"] == "127.0.0.1"
    assert server["headless"] is True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_addresses() -> list[str]:
    """The machine's non-loopback IPv4 addresses (the one a default route would use, and more)."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))        # no packet is sent: picks the outgoing address
            found.add(s.getsockname()[0])
        except OSError:
            pass
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


def listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (``ss -ltn``), or [] without ``ss``."""
    if not shutil.which("ss"):
        return []
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if len(line.split()) > 3 and line.split()[3].rsplit(":", 1)[-1] == str(port)]


@pytest.fixture
def started_app():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.port", str(port), "--server.headless", "true"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("streamlit did not start on 127.0.0.1:%d" % port)
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_started_app_listens_on_loopback_only(started_app):
    port = started_app
    sockets = listening(port)
    if sockets:
        assert sockets == [f"127.0.0.1:{port}"], sockets
    others = other_addresses()
    if not sockets and not others:
        pytest.skip("neither `ss` nor a non-loopback address to check from")
    for address in others:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((address, port))
