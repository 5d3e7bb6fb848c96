"""One segmentation and one DICOM parse per slice on every page and command.

The pipeline carries each slice's decoded pixels and its one segmentation
(``SliceResult.seg``) through the guard, the classifier's input, the findings,
the heatmaps and the lung outline; a DICOM file is parsed once when it is read.
These tests count the calls of ``lungct.lungs.segment`` (wherever a module bound
it) and of ``pydicom.dcmread`` while each page and command runs on a fresh input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import streamlit as st
from dicom_factory import ct_series
from test_app import app, open_page  # noqa: F401 (the fixture)

import lungct.lungs

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "malignant_1.jpg"
N = 4


class Counts:
    def __init__(self):
        self.segment = self.dcmread = 0


@pytest.fixture
def counts(monkeypatch):
    """Counters of segmentations and DICOM parses, reset by the test when it starts."""
    c = Counts()
    real_segment, real_dcmread = lungct.lungs.segment, pydicom.dcmread

    def segment(*args, **kwargs):
        c.segment += 1
        return real_segment(*args, **kwargs)

    def dcmread(*args, **kwargs):
        c.dcmread += 1
        return real_dcmread(*args, **kwargs)

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if name.startswith("lungct") and getattr(module, "segment", None) is real_segment:
            monkeypatch.setattr(module, "segment", segment)
    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    st.cache_data.clear()   # a cached result would count nothing
    return c


def series_bytes(seed: int) -> list[tuple[str, bytes]]:
    """A CT series made from a public sample slice (so the guard accepts it), new per seed."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(SAMPLE).convert("L"), dtype=np.float64) / 255.0
    return [(f"IM{i}.dcm", d) for i, d in enumerate(
        ct_series(N, size=192, image=image, z0=-300.0 - seed))]


def reset(c: Counts) -> None:
    c.segment = c.dcmread = 0


def test_classify_page_segments_and_parses_each_slice_once(app, counts):
    at = open_page(app, "classify")
    at.toggle(key="classify_outline").set_value(True)
    reset(counts)
    at.session_state["classify_files"] = series_bytes(seed=11)
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("image")) >= N          # every slice shown (with heatmap when classified)
    assert any(m.value.startswith("#### File") for m in at.markdown)
    assert (counts.segment, counts.dcmread) == (N, N)


def test_gradcam_page_segments_and_parses_its_slice_once(app, counts):
    data = series_bytes(seed=12)[1][1]
    app.session_state["gradcam_input"] = {"data": data, "name": "upload.dcm",
                                          "title": "File 2 of 4 (.dcm)", "window": "mediastinal"}
    app.session_state["gradcam_source"] = "from the Classify page"
    reset(counts)
    at = open_page(app, "gradcam")
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("image")) > 3            # slice, findings and several heatmaps
    assert (counts.segment, counts.dcmread) == (1, 1)


def test_compare_page_segments_its_slice_once_for_every_model(app, counts):
    at = open_page(app, "compare")
    reset(counts)
    at.selectbox(key="compare_example").select(SAMPLE.name).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) >= 2           # the slice and at least one model's heatmap
    assert counts.segment == 1


def test_study_page_segments_and_parses_each_slice_once(app, counts):
    at = open_page(app, "study")
    reset(counts)
    at.session_state["study_files"] = series_bytes(seed=13)
    at.run()
    assert not at.exception, at.exception
    at.toggle(key="study_outline").set_value(True).run()
    at.toggle(key="study_heat").set_value(True).run()
    at.radio(key="study_wl").set_value("mediastinal").run()
    assert not at.exception, at.exception
    assert (counts.segment, counts.dcmread) == (N, N)


@pytest.mark.parametrize("command", ["predict", "case"])
def test_commands_segment_and_parse_each_slice_once(command, tmp_path, counts, capsys):
    from lungct.cli import main

    folder = tmp_path / "series"
    folder.mkdir()
    for name, data in series_bytes(seed=14):
        (folder / name).write_bytes(data)
    reset(counts)
    rc = main([command, str(folder), "--json"])
    out = capsys.readouterr().out
    assert rc in (0, 1) and out
    if command == "case":
        assert len(json.loads(out)["slices"]) == N
    assert (counts.segment, counts.dcmread) == (N, N)


def test_gradcam_page_judges_a_dicom_as_the_classify_page_does(app):
    """The same DICOM read in the mediastinal window: the Grad-CAM page shows the Classify
    page's label, guard verdict and caution (the guard judges the lung window on both)."""
    st.cache_data.clear()
    name, data = series_bytes(seed=15)[2]
    at = open_page(app, "classify")
    at.selectbox(key="classify_window").select("mediastinal")
    at.session_state["classify_files"] = [(name, data)]
    at.run()
    assert not at.exception, at.exception
    label = at.metric[0].value
    classify_warnings = sorted(w.value for w in at.warning if not w.value.startswith("Caution"))
    at.session_state["gradcam_input"] = {"data": data, "name": "upload.dcm",
                                         "title": "File 1 of 1 (.dcm)", "window": "mediastinal"}
    at.session_state["gradcam_source"] = "from the Classify page"
    at = open_page(at, "gradcam")
    shown = "\n".join(m.value for m in at.markdown)
    assert f": **{label}**" in shown
    gradcam_warnings = [w.value for w in at.warning]
    assert all(w in classify_warnings for w in gradcam_warnings)
    assert ([w for w in gradcam_warnings if "caution: " in w]
            == [w for w in classify_warnings if "caution: " in w])
    assert ("caution: unlike what the model was validated on" in shown) == any(
        "caution: " in w for w in classify_warnings)


def test_public_load_guard_takes_the_folder_first(tmp_path):
    """``lungct.load_guard(path)`` is ``lungct.guard.load_guard``: the folder first, a
    missing one a ``GuardLoadError`` that names it."""
    import lungct
    from lungct.guard import WEIGHTS_FILE, GuardLoadError, guard_dir, load_guard

    assert lungct.load_guard is load_guard
    if (guard_dir() / WEIGHTS_FILE).is_file():
        guard = lungct.load_guard(str(guard_dir()))
        assert guard.check(np.zeros((64, 64), np.float32)).status == "not_image"
    with pytest.raises(GuardLoadError, match="nowhere"):
        lungct.load_guard(tmp_path / "nowhere")
