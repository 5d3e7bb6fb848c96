"""The PACS page: neutral verdicts, readable tables, non-identifying study labels, storing only
once confirmed, reruns versioned or replaced (AppTest against a real Orthanc where installed).
"""

from __future__ import annotations

import math

import pytest
from dicom_factory import ct_series
from test_app import APP, TIMEOUT, open_page, texts
from test_case import BatchClassifier
from test_pacs import PHI, SECRETS, STUDY, orthanc  # noqa: F401  (orthanc: the fixture)
from streamlit.testing.v1 import AppTest

from lungct.app_support import pacs_view
from lungct.pipeline import run_case


def fake_case(n: int = 4, broken: bool = True):
    """A case of ``n`` slices; with ``broken``, the last one's pixels are truncated (unreadable)."""
    import io

    import pydicom

    datas = ct_series(n)
    if broken:
        ds = pydicom.dcmread(io.BytesIO(datas[-1]))
        ds.PixelData = bytes(ds.PixelData)[:100]
        buf = io.BytesIO()
        ds.save_as(buf)
        datas[-1] = buf.getvalue()
    return run_case([(f"s{i}.dcm", d) for i, d in enumerate(datas)], BatchClassifier())


def test_probabilities_are_percentages_highest_first():
    text = pacs_view.probabilities_text({"normal": 0.02, "benign": 0.05, "malignant": 0.93})
    assert text == "malignant 93% · benign 5% · normal 2%"
    assert pacs_view.probabilities_text(None) == pacs_view.MISSING


def test_slice_table_has_text_in_every_cell():
    case = fake_case()
    table = pacs_view.slice_table(case)
    assert len(table) == 4 and list(table.columns) == ["slice", "z (mm)", "status", "label",
                                                       "probabilities", "note"]
    for value in table.to_numpy().ravel():
        assert isinstance(value, str) and value not in ("None", "nan")
        assert "{" not in value                   # no raw dict
    classified = table[table["status"] == "classified"]
    assert classified["probabilities"].str.contains("%").all()
    failed = table[table["status"] != "classified"]
    assert len(failed) == 1 and (failed["probabilities"] == pacs_view.MISSING).all()
    assert (failed["label"] == pacs_view.MISSING).all() and failed["note"].iloc[0]


def test_verdict_banner_is_never_success():
    case = fake_case(broken=False)
    kind, text = pacs_view.verdict_banner(case)
    assert kind in ("info", "warning") and text.startswith(f"Case verdict: {case.label}")
    assert kind == ("warning" if case.verdict["unsure"] else "info")


def test_study_label_names_no_patient():
    label = pacs_view.study_label({"study_uid": "1.2.3.4567890123", "date": "2024-03-01",
                                   "description": "CT THORAX", "modalities": ["CT", "SR"],
                                   "series": 2, "instances": 9, "PatientName": "Doe^Jane"})
    assert label == "2024-03-01 · CT THORAX · CT/SR · 2 series, 9 instances · UID …67890123"
    assert pacs_view.study_label({"study_uid": "9"}).startswith("no date · no description")


# ---------------------------------------------------------------- the page itself

@pytest.fixture
def page(models_dir, orthanc, monkeypatch, tmp_path):  # noqa: F811
    from lungct.app_support import cache
    from lungct.pacs.client import PacsClient
    from lungct.pipeline.series import read_slice

    monkeypatch.setattr(cache, "guard", lambda key, folder: None)   # synthetic slices
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")
    monkeypatch.setenv("LUNGCT_PACS_URL", orthanc.dicomweb_url)
    pacs = PacsClient(orthanc.dicomweb_url)
    for study in pacs.studies():      # one study on the server: this test's
        for s in pacs.series(study["study_uid"]):
            pacs.delete_series(s["series_uid"])
    datas = ct_series(4, size=96, phi={**PHI, **STUDY})
    pacs.store([read_slice("x", d).dataset for d in datas])
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    return open_page(at, "pacs"), pacs, read_slice("x", datas[0]).study_uid


def run_button(at):
    return at.button(key="pacs_run")


def n_series(pacs, study_uid) -> int:
    return len(pacs.series(study_uid))


def test_pacs_page_stores_only_once_confirmed(page):
    at, pacs, study_uid = page
    options = at.selectbox(key="pacs_study").options
    assert options == [f"2024-03-01 · CT THORAX · CT · 1 series, 4 instances · UID …"
                       f"{study_uid[-8:]}"]
    for secret in SECRETS:
        assert secret not in texts(at) and secret not in options[0]

    assert run_button(at).label == "Classify only (nothing is stored)"
    run_button(at).click().run()
    assert not at.exception and not at.error, at.error
    assert n_series(pacs, study_uid) == 1                     # nothing written
    assert not at.success                                     # neutral banners only
    banners = [b.value for b in list(at.info) + list(at.warning)]
    assert any(b.startswith("Case verdict: ") for b in banners)
    assert any(c.value == "Nothing was stored in the PACS." for c in at.caption)
    table = at.dataframe[0].value
    assert table["probabilities"].str.contains("%").any()
    for value in table.to_numpy().ravel():
        assert value is not None and not (isinstance(value, float) and math.isnan(value))
        assert str(value) not in ("None", "nan") and "{" not in str(value)

    at.checkbox(key=f"pacs_confirm_{study_uid}").check().run()
    assert run_button(at).label == "Classify and store"
    run_button(at).click().run()
    assert not at.exception and not at.error and not at.success
    assert n_series(pacs, study_uid) == 3
    assert any(c.value == "Stored the SR and the PDF into the study as run 1."
               for c in at.caption)


def test_pacs_page_rerun_is_versioned_or_replaces(page):
    at, pacs, study_uid = page
    at.checkbox(key=f"pacs_confirm_{study_uid}").check().run()
    run_button(at).click().run()
    assert n_series(pacs, study_uid) == 3
    at.run()   # the page again, with the stored result in the study
    assert any("already holds lungct results (up to run 1)" in c.value for c in at.caption)
    run_button(at).click().run()
    assert not at.exception and not at.error
    assert n_series(pacs, study_uid) == 5
    assert any("as run 2 (supersedes run 1)." in c.value for c in at.caption)
    # Orthanc: the earlier runs may go, once asked for
    at.checkbox(key=f"pacs_replace_{study_uid}").check().run()
    run_button(at).click().run()
    assert not at.exception and not at.error
    assert n_series(pacs, study_uid) == 3
    assert any("run 3" in c.value and "Deleted 4 earlier" in c.value for c in at.caption)
