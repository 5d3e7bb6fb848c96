"""A local Orthanc with DICOMweb on 127.0.0.1: for ``make pacs`` and the round-trip tests.

Uses the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``apt-get install
orthanc orthanc-dicomweb``). The configuration is generated into a run folder
(a temporary directory, or ``.pacs/`` for ``make pacs``, both git-ignored):
HTTP on 127.0.0.1 only, no DICOM (DIMSE) port, no remote access, storage in
that folder. Nothing tracked is rewritten.

    python -m lungct pacs serve [--port 8042] [--folder .pacs] [--no-demo]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                     "/usr/lib/orthanc/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"


class OrthancUnavailable(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is not installed."""


def find_orthanc() -> tuple[str, str]:
    """(Orthanc binary, DICOMweb plugin); OrthancUnavailable says how to install them."""
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists(
        "/usr/sbin/Orthanc") else None)
    plugin = next((p for p in PLUGIN_CANDIDATES if os.path.exists(p)), None)
    if plugin is None:
        plugin = next(iter(sorted(Path("/usr/lib").glob("**/libOrthancDicomWeb.so*"))), None)
        plugin = str(plugin) if plugin else None
    if not binary or not plugin:
        missing = "the Orthanc binary" if not binary else "the DICOMweb plugin"
        raise OrthancUnavailable(f"{missing} is not installed: apt-get install orthanc "
                                 "orthanc-dicomweb")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder: Path, port: int, plugin: str) -> dict:
    return {"Name": "lungct-local", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "HttpPort": port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": False, "HttpDescribeErrors": True,
            "Plugins": [plugin], "StableAge": 1,
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": True,
                         "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"}}


class LocalOrthanc:
    """An Orthanc process on 127.0.0.1:``port`` storing into ``folder``; a context manager.

    >>> with LocalOrthanc() as pacs:                # doctest: +SKIP
    ...     print(pacs.dicomweb_url)
    """

    def __init__(self, port: int | None = None, folder: str | Path | None = None):
        self.binary, self.plugin = find_orthanc()
        self.port = port or free_port()
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix="lungct-orthanc-")
        self.folder = Path(folder) if folder else Path(self._tmp.name)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_ROOT.rstrip("/")

    def start(self, timeout: float = 30.0) -> "LocalOrthanc":
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg_path = self.folder / "orthanc.json"
        cfg_path.write_text(json.dumps(config(self.folder, self.port, self.plugin), indent=2))
        log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([self.binary, str(cfg_path)], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.folder / "orthanc.log").read_text(errors="replace")[-800:]
                raise OrthancUnavailable(f"Orthanc exited at start (code "
                                         f"{self.process.returncode}): {tail}")
            try:
                with urllib.request.urlopen(self.dicomweb_url + "/studies", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise OrthancUnavailable(f"Orthanc did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalOrthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def demo_series() -> list:
    """The demo study: ``../shared/data/lung-pet-ct-dx-sample/`` when present, else synthetic."""
    from lungct.config import REPO_ROOT
    from lungct.pipeline.series import load_study

    sample = REPO_ROOT.parent / "shared" / "data" / "lung-pet-ct-dx-sample"
    if sample.is_dir():
        folders = sorted(p for p in sample.iterdir() if p.is_dir() and p.name.startswith("Lung"))
        study = load_study(folders[:2])
        return [f.dataset for s in study.series for f in s.files]
    from lungct.data.demo_series import demo_series
    from lungct.pipeline.series import read_slice
    return [read_slice(f"demo{i}.dcm", d).dataset for i, d in enumerate(demo_series())]


def serve(port: int | None = None, folder: str = ".pacs", demo: bool = True) -> int:
    """Run a local Orthanc (``pacs serve``) until Ctrl-C; with ``demo``, load the demo study."""
    from lungct.config import load_config
    from lungct.pacs.client import PacsClient

    port = port or int((load_config().get("pacs") or {}).get("local_port", 8042))
    try:
        server = LocalOrthanc(port, folder).start()
    except OrthancUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if demo:
            datasets = demo_series()
            PacsClient(server.dicomweb_url).store(datasets)
            print(f"loaded a demo study ({len(datasets)} instances)")
        print(f"Orthanc with DICOMweb at {server.dicomweb_url} (storage in {server.folder}); "
              "Ctrl-C stops it.\nTry: python -m lungct pacs studies --url "
              f"{server.dicomweb_url}", flush=True)
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
