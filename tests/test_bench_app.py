"""``python -m lungct lab bench-app cam`` writes what the app's time estimates read."""

from __future__ import annotations

import json

import torch

from lungct.cli import main as cli_main
from lungct.lab import bench_app
from lungct.app_support import heatmaps


def test_cam_seconds_are_measured_and_read_back(tmp_path, monkeypatch, capsys):
    """A real measurement (every CAM method on a tiny model, nothing mocked): the report
    holds a wall and a CPU time per method, the table prints them, and the app's estimate
    (``heatmaps.measured_seconds``) reads the same wall times back."""
    from lungct.explain import CAM_METHODS
    from lungct.models import create_model, save_model

    torch.manual_seed(0)
    folder = save_model(create_model("efficientnet_lite0", pretrained=False, input_size=64),
                        tmp_path / "tiny", {"name": "tiny"})
    monkeypatch.setattr(bench_app, "config_from_args",
                        lambda args: {"reports": {"dir": str(tmp_path)}})
    threads = torch.get_num_threads()
    try:
        assert cli_main(["lab", "bench-app", "cam", "--models", str(folder),
                         "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / heatmaps.CAM_SECONDS_FILE).read_text())
    assert report["command"] == "python -m lungct lab bench-app cam --threads 1"
    wall, cpu = report["models"][str(folder)], report["cpu_seconds"][str(folder)]
    assert set(wall) == set(cpu) == set(CAM_METHODS)
    assert all(0 <= v < 120 for v in (*wall.values(), *cpu.values()))
    row = next(line for line in out.splitlines() if line.startswith(str(folder)[:26]))
    for method in CAM_METHODS:
        assert f"{wall[method]:.1f} / {cpu[method]:.1f}" in row
    assert heatmaps.measured_seconds(str(folder), tmp_path / heatmaps.CAM_SECONDS_FILE) == wall
