"""``python -m lungct lab bench-app cam`` writes what the app's time estimates read."""

from __future__ import annotations

import json

import torch

from lungct.cli import main as cli_main
from lungct.lab import bench_app
from lungct.app_support import heatmaps


def test_cam_report_round_trip(tmp_path, monkeypatch, capsys):
    wall = {"m1": {"Grad-CAM": 0.2, "ScoreCAM": 4.4}}
    cpu = {"m1": {"Grad-CAM": 0.3, "ScoreCAM": 8.1}}
    monkeypatch.setattr(bench_app, "cam_seconds", lambda names, sample: (wall, cpu))
    monkeypatch.setattr(bench_app, "config_from_args",
                        lambda args: {"reports": {"dir": str(tmp_path)}})
    threads = torch.get_num_threads()
    try:
        assert cli_main(["lab", "bench-app", "cam", "--models", "m1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "4.4 / 8.1" in out and "ScoreCAM" in out
    report = tmp_path / heatmaps.CAM_SECONDS_FILE
    assert json.loads(report.read_text())["command"] == "python -m lungct lab bench-app cam --threads 1"
    assert heatmaps.measured_seconds("m1", report) == {"Grad-CAM": 0.2, "ScoreCAM": 4.4}
