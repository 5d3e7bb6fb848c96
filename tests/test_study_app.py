"""AppTest runs of the Study and PACS pages (thin pages over lungct.pipeline.case and lungct.pacs)."""

from __future__ import annotations

import pytest
from dicom_factory import ct_series
from test_app import APP, TIMEOUT, open_page, texts
from streamlit.testing.v1 import AppTest

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-12345"}


@pytest.fixture
def at(models_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    return app


def test_study_page_browses_a_series(at):
    files = [(f"scan_{i}.dcm", d) for i, d in enumerate(ct_series(8, size=128, phi=PHI))][::-1]
    at.session_state["study_files"] = files
    open_page(at, "study")
    assert [m.label for m in at.metric] == ["classified", "outside the lungs", "refused",
                                            "unreadable"]
    assert sum(int(m.value) for m in at.metric) == 8
    assert at.slider(key="study_slice").max == 8
    body = texts(at)
    assert "Case verdict" in body and "Doe" not in body and "PID-12345" not in body
    at.radio(key="study_wl").set_value("mediastinal").run()
    assert not at.exception, at.exception
    at.toggle(key="study_outline").set_value(True).run()
    assert not at.exception, at.exception
    at.slider(key="study_slice").set_value(3).run()
    assert not at.exception and "slice 3 of 8" in texts(at)


def test_study_page_switches_series_and_back_to_the_default_for_a_new_upload(at, monkeypatch):
    """Two series in one upload: the longer is shown first; choosing the other classifies
    it (read once more, for that series); choosing the first again reads nothing (its
    result is cached); a new upload starts at its own default."""
    from pydicom.uid import generate_uid

    import lungct.pipeline.series as series_module
    reads = []
    load_study = series_module.load_study
    monkeypatch.setattr(series_module, "load_study",
                        lambda *a, **k: reads.append(1) or load_study(*a, **k))

    study = generate_uid()
    long = ct_series(6, size=96, study_uid=study, series_uid=generate_uid())
    short = ct_series(3, size=96, study_uid=study, series_uid=generate_uid(), z0=-100.0)
    at.session_state["study_files"] = [(f"a{i}.dcm", d) for i, d in enumerate(long)] + \
        [(f"b{i}.dcm", d) for i, d in enumerate(short)]
    open_page(at, "study")
    series = next(s for s in at.selectbox if s.label == "Series")
    assert len(series.options) == 2 and sum(int(m.value) for m in at.metric) == 6
    other = 1 - series.index
    series.set_value(other).run()
    assert not at.exception, at.exception
    assert sum(int(m.value) for m in at.metric) == 3
    assert next(s for s in at.selectbox if s.label == "Series").index == other
    assert len(reads) == 2
    next(s for s in at.selectbox if s.label == "Series").set_value(1 - other).run()
    assert not at.exception and sum(int(m.value) for m in at.metric) == 6
    assert len(reads) == 2                     # the default series' result, from the cache
    at.session_state["study_files"] = [(f"c{i}.dcm", d) for i, d in enumerate(ct_series(5, size=96))]
    at.run()
    assert not at.exception and sum(int(m.value) for m in at.metric) == 5


def test_study_page_reads_like_a_clinical_tool(at, models_dir):
    """A .zip upload: presets window its members, probabilities read as percentages,
    no None cell, no research-protocol model in the selector."""
    import io
    import zipfile

    from lungct.app_support.catalog import list_entries
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, d in enumerate(ct_series(4, size=128)):
            z.writestr(f"series/IM{i}.dcm", d)
    at.session_state["study_files"] = [("study.zip", buf.getvalue())]
    open_page(at, "study")
    at.radio(key="study_wl").set_value("mediastinal").run()
    assert not at.exception, at.exception
    captions = [c for image in at.get("image") for c in image.captions]
    assert any("window W350/L50" in c for c in captions), captions   # the preset applied
    research = {e.name for e in list_entries(models_dir) if e.protocol != "grouped"}
    assert not research & set(at.sidebar.selectbox(key="model_name").options)

    from lungct.app_support.catalog import list_samples, read_sample
    at.session_state["study_files"] = [(n, read_sample(n)) for n in list_samples()
                                       if n.endswith(".jpg")]
    at.session_state["study_slice"] = 1
    at.run()
    assert not at.exception, at.exception
    body = texts(at)
    assert "'malignant':" not in body and "'normal':" not in body     # no raw dict
    assert any(m.value.count("%") == 3 for m in at.markdown)           # "malignant 93% · ..."
    assert at.radio(key="study_wl").disabled        # no HU in a JPEG: presets are off, said so
    table = at.dataframe[-1].value                  # most suspicious slices first
    assert list(table.columns) == ["slice", "z (mm)", "file", "status", "label",
                                   "P(malignant)", "note"]
    assert not any(v is None or str(v) in ("None", "nan") for v in table.to_numpy().ravel())
    fig = at.get("plotly_chart")[0].proto.spec
    assert "slice number" in fig and "slice (case order)" not in fig


def test_study_page_without_input(at):
    open_page(at, "study")
    assert any("Upload the slices" in i.value for i in at.info)


def test_pacs_page_lists_studies_and_stores_a_result(at, monkeypatch):
    from lungct.pacs.client import PacsClient
    from lungct.pacs.server import LocalOrthanc, OrthancUnavailable, find_orthanc
    from lungct.pipeline.series import read_slice
    try:
        find_orthanc()
    except OrthancUnavailable as err:
        pytest.skip(str(err))
    with LocalOrthanc() as server:
        PacsClient(server.dicomweb_url).store(
            [read_slice("x", d).dataset for d in ct_series(4, phi=PHI)])
        monkeypatch.setenv("LUNGCT_PACS_URL", server.dicomweb_url)
        open_page(at, "pacs")
        assert len(at.selectbox(key="pacs_study").options) == 1
        assert "Doe" not in texts(at)
        at.button[0].click().run()
        assert not at.exception, at.exception
        shown = " ".join(b.value for b in list(at.info) + list(at.warning) + list(at.error))
        assert not at.success                  # a verdict is never shown as good news
        assert "Case verdict" in shown or "nothing stored" in shown
    monkeypatch.setenv("LUNGCT_PACS_URL", "http://127.0.0.1:9/dicom-web")
    open_page(at, "pacs")
    assert any("cannot reach the PACS" in e.value for e in at.error)
