"""The app's heatmap store, the measured time estimates and the progress callback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lungct.app_support import heatmaps
from lungct.models import create_model


def test_store_is_bounded_and_expires(monkeypatch):
    store = heatmaps.HeatmapStore(max_entries=2, ttl_s=10)
    clock = [100.0]
    monkeypatch.setattr(heatmaps.time, "monotonic", lambda: clock[0])
    store.put(("a",), 1)
    store.put(("b",), 2)
    assert store.get(("a",)) == 1          # a is now the most recent
    store.put(("c",), 3)                   # evicts b, the least recently used
    assert store.get(("b",)) is None and store.get(("a",)) == 1 and len(store) == 2
    clock[0] += 11
    assert store.get(("a",)) is None and store.get(("c",)) is None


@pytest.fixture(scope="module")
def tiny_model():
    return create_model("efficientnet_lite0", pretrained=False, input_size=64).eval()


def test_heatmap_computed_once_and_eigencam_class_free(tiny_model, monkeypatch):
    calls = []
    real = heatmaps.explain

    def counting(*args, **kw):
        calls.append(kw["method"])
        return real(*args, **kw)

    monkeypatch.setattr(heatmaps, "explain", counting)
    store = heatmaps.HeatmapStore()
    gray = np.linspace(0, 1, 80 * 80, dtype=np.float32).reshape(80, 80)
    heat, cls = heatmaps.heatmap(store, tiny_model, "k", gray, "Grad-CAM", "benign", None)
    again, _ = heatmaps.heatmap(store, tiny_model, "k", gray, "Grad-CAM", "benign", None)
    assert cls == "benign" and again is heat and calls == ["Grad-CAM"]
    heatmaps.heatmap(store, tiny_model, "k", gray.T.copy(), "Grad-CAM", "benign", None)
    assert len(calls) == 2                 # another slice is another entry
    for target in ("normal", "malignant"):
        _, cls = heatmaps.heatmap(store, tiny_model, "k", gray, "EigenCAM", target, None)
        assert cls is None
    assert calls.count("EigenCAM") == 1


def test_measured_seconds_and_notes(tmp_path, monkeypatch):
    report = tmp_path / heatmaps.CAM_SECONDS_FILE
    report.write_text(json.dumps({"models": {"m1": {"ScoreCAM": 4.4, "AblationCAM": 0.2}}}))
    assert heatmaps.measured_seconds("m1", report) == {"ScoreCAM": 4.4, "AblationCAM": 0.2}
    assert heatmaps.measured_seconds("other", report) == {}
    assert heatmaps.measured_seconds("m1", tmp_path / "missing.json") == {}
    monkeypatch.setattr(heatmaps, "measured_seconds", lambda name: {"ScoreCAM": 4.4})
    assert "about 4 s" in heatmaps.slow_note("ScoreCAM", "m1")
    assert "not timed" in heatmaps.slow_note("AblationCAM", "m1")


class FakeSlot:
    def __init__(self):
        self.events = []

    def empty(self):
        self.events.append("empty")
        return self

    def progress(self, share, text=""):
        self.events.append(round(share, 3))


def test_progress_bar_moves_then_clears(monkeypatch):
    monkeypatch.setattr(heatmaps, "measured_seconds", lambda name: {})
    assert heatmaps.progress_bar(FakeSlot(), "Grad-CAM", "m") is None
    slot = FakeSlot()
    report = heatmaps.progress_bar(slot, "ScoreCAM", "m")
    for share in (0.25, 0.5, 1.0):
        report(share)
    assert slot.events == ["empty", 0.25, 0.5, "empty"]


def test_slow_methods_score_the_chosen_number_of_channels(tiny_model):
    """Default: SLOW_CHANNELS masked images; channels=None: one per channel (as published)."""
    from lungct.explain import SLOW_BATCH, SLOW_CHANNELS, explain
    gray = np.linspace(0, 1, 80 * 80, dtype=np.float32).reshape(80, 80)
    passes = {}
    for channels in (SLOW_CHANNELS, None):
        shares = []
        explain(tiny_model, gray, "ScoreCAM", target_class="malignant", progress=shares.append,
                channels=channels)
        passes[channels] = len(shares)
    assert passes[SLOW_CHANNELS] == SLOW_CHANNELS // SLOW_BATCH
    assert passes[None] == tiny_model.bn2.num_features // SLOW_BATCH  # 1280 channels
