"""The PACS round trip against a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``).

The tests start Orthanc themselves on 127.0.0.1 (a free port, a temporary storage
folder, stopped at the end). Without the binary they are skipped with the reason,
except where ``LUNGCT_REQUIRE_ORTHANC`` is set (CI), where that is a failure.
Series are synthetic (with patient tags, to check none leaks into the result's
content); the Lung-PET-CT-Dx sample is used too where ``../shared`` has it.
"""

from __future__ import annotations

import json
import os

import pytest
from dicom_factory import ct_series

from lungct.config import REPO_ROOT
from lungct.pacs.client import PacsClient, PacsError
from lungct.pacs.results import sr_text
from lungct.pacs.server import LocalOrthanc, OrthancUnavailable, find_orthanc, free_port
from lungct.pacs.workflow import run_on_study
from lungct.series import load_study, read_slice

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19600101",
       "AccessionNumber": "ACC-999", "InstitutionName": "St Example Hospital"}
SECRETS = ("Doe", "Jane", "PID-12345", "19600101", "ACC-999", "St Example")
SHARED = REPO_ROOT.parent / "shared" / "data" / "lung-pet-ct-dx-sample"


@pytest.fixture(scope="module")
def orthanc():
    try:
        find_orthanc()
    except OrthancUnavailable as err:
        if os.environ.get("LUNGCT_REQUIRE_ORTHANC"):
            pytest.fail(f"Orthanc is required here (LUNGCT_REQUIRE_ORTHANC): {err}")
        print(f"\nPACS tests skipped: {err}")
        pytest.skip(f"PACS round trip needs Orthanc: {err}")
    with LocalOrthanc() as server:
        yield server


@pytest.fixture(scope="module")
def pacs(orthanc):
    return PacsClient(orthanc.dicomweb_url)


def datasets(datas):
    return [read_slice(f"{i}.dcm", d).dataset for i, d in enumerate(datas)]


def put_study(pacs, **kwargs) -> str:
    datas = ct_series(**{"n": 6, "phi": PHI, **kwargs})
    pacs.store(datasets(datas))
    return read_slice("x.dcm", datas[0]).study_uid


def n_series(pacs, study_uid) -> int:
    return len(pacs.series(study_uid))


@pytest.fixture(scope="module")
def classifier():
    from test_case import BatchClassifier
    clf = BatchClassifier()
    clf.card = {"test_metrics": {"n": 219, "accuracy": 0.8, "malignant_recall": 0.875,
                                 "roc_auc": {"malignant": 0.93}},
                "evaluated_on": {"protocol": "grouped"}}
    return clf


def test_round_trip_store_search_retrieve_classify_store_back(pacs, classifier):
    study_uid = put_study(pacs, n=7)
    found = [s for s in pacs.studies() if s["study_uid"] == study_uid]
    assert found and found[0]["modalities"] == ["CT"] and found[0]["instances"] == 7
    listed = pacs.studies({"PatientID": "PID-12345"})
    assert study_uid in {s["study_uid"] for s in listed}
    assert all(set(s) == {"study_uid", "modalities", "series", "instances"} for s in listed)

    run = run_on_study(pacs, study_uid, classifier)
    case = run.case.as_dict()
    assert case["counts"]["classified"] == 7 and case["verdict"] in ("normal", "benign",
                                                                     "malignant")
    z = [s["location_mm"] for s in case["slices"]]
    assert z == sorted(z) and len(z) == 7
    assert set(run.stored) == {"sr", "pdf"}

    series = {s["modality"]: s for s in pacs.series(study_uid)}
    assert set(series) == {"CT", "SR", "DOC"}          # the result is in the same study
    sr = pacs.retrieve(study_uid, series["SR"]["series_uid"])[0]
    pdf = pacs.retrieve(study_uid, series["DOC"]["series_uid"])[0]
    assert sr.StudyInstanceUID == pdf.StudyInstanceUID == study_uid
    assert str(sr.SOPInstanceUID) == run.stored["sr"]
    # the SR names the classified instances as its evidence
    evidence = {str(i.ReferencedSOPInstanceUID)
                for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    ct = pacs.retrieve(study_uid, series["CT"]["series_uid"])
    assert evidence == {str(d.SOPInstanceUID) for d in ct}
    text = "\n".join(sr_text(sr))
    assert f"Case verdict: {case['verdict']}" in text
    assert "Intended use" in text and "not a medical device" in text
    assert "malignant recall 87.5%" in text and "fake" in text
    assert text.count("slice ") >= 7 and "z = " in text
    for s in case["slices"]:
        assert f"P(malignant) {s['probabilities']['malignant']:.3f}" in text
    body = bytes(pdf.EncapsulatedDocument)
    assert body.startswith(b"%PDF") and pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    from lungct.case_report import pdf_text
    drawn = pdf_text(body)
    assert case["verdict"] in drawn and "slice 7" in drawn and "Intended use" in drawn
    for secret in SECRETS:     # the content names no patient (the header files it)
        assert secret not in text and secret not in drawn


def test_pacs_command_search_and_run(pacs, orthanc, capsys, tmp_path, monkeypatch):
    import torch

    from lungct.cli import main
    from lungct.models import create_model, save_model
    torch.manual_seed(0)
    model_dir = save_model(create_model("efficientnet_lite0", pretrained=False, input_size=64),
                           tmp_path / "tiny", {"name": "tiny"})
    study_uid = put_study(pacs)
    monkeypatch.setenv("LUNGCT_PACS_URL", orthanc.dicomweb_url)
    assert main(["pacs", "studies", "--json"]) == 0
    out = capsys.readouterr().out
    assert study_uid in {s["study_uid"] for s in json.loads(out)}
    rc = main(["pacs", "run", study_uid, "--json", "--model", str(model_dir), "--no-guard",
               "--backend", "torch", "--store", "sr"])
    out = capsys.readouterr().out
    d = json.loads(out)
    assert rc == 0 and d["stored"] == ["sr"] and d["counts"]["classified"] == 6
    for secret in SECRETS:
        assert secret not in out
    assert {s["modality"] for s in pacs.series(study_uid)} == {"CT", "SR"}


def test_wrong_url_and_unreachable_server(orthanc, classifier):
    wrong = PacsClient(orthanc.url + "/not-dicomweb")
    with pytest.raises(PacsError, match="check the URL"):
        wrong.studies()
    down = PacsClient(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(PacsError, match="cannot reach the PACS"):
        run_on_study(down, "1.2.3", classifier)
    with pytest.raises(PacsError, match="http:// or https://"):
        PacsClient("ftp://example")


def test_series_of_another_modality_stores_nothing(pacs, classifier):
    study_uid = put_study(pacs, modality="MR")
    with pytest.raises(PacsError, match="no CT series.*MR.*nothing stored"):
        run_on_study(pacs, study_uid, classifier)
    mr = pacs.series(study_uid)[0]["series_uid"]
    with pytest.raises(PacsError, match="is MR, not CT.*nothing stored"):
        run_on_study(pacs, study_uid, classifier, series_uid=mr)
    assert n_series(pacs, study_uid) == 1


def test_study_without_images_and_unknown_study(pacs, classifier):
    from lungct.pacs.results import build_pdf
    src = datasets(ct_series(1, phi=PHI))
    doc = build_pdf({"verdict": "normal", "rule": "r", "unsure": False,
                     "counts": {"classified": 0, "outside_lungs": 0, "refused": 0, "error": 0},
                     "series": {}, "slices": [], "model": {"name": "m", "version": "v"}},
                    None, src)
    pacs.store([doc])
    with pytest.raises(PacsError, match="no CT series.*DOC"):
        run_on_study(pacs, str(doc.StudyInstanceUID), classifier)
    assert n_series(pacs, str(doc.StudyInstanceUID)) == 1
    with pytest.raises(PacsError, match="no series in this study"):
        run_on_study(pacs, "1.2.826.0.1.3680043.8.498.1", classifier)


def test_corrupt_instance_is_reported_and_nothing_stored(pacs, classifier):
    datas = ct_series(2, phi=PHI)
    bad = read_slice("bad.dcm", datas[0]).dataset
    bad.PixelData = bytes(bad.PixelData)[:100]            # header fine, pixels truncated
    study_uid = bad.StudyInstanceUID
    pacs.store([bad])
    with pytest.raises(PacsError, match="no slice could be classified.*1 unreadable.*nothing "
                                        "stored"):
        run_on_study(pacs, study_uid, classifier)
    assert n_series(pacs, study_uid) == 1
    # beside a good instance, the corrupt one is listed and the rest is classified
    pacs.store([read_slice("good.dcm", datas[1]).dataset])
    run = run_on_study(pacs, study_uid, classifier, store=("sr",))
    assert run.case.counts == {"classified": 1, "outside_lungs": 0, "refused": 0, "error": 1}
    assert any("pixel data" in (s.error or "") for s in run.case.slices)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/lung-pet-ct-dx-sample absent")
def test_real_series_round_trip(pacs, classifier):
    folder = next(p for p in sorted(SHARED.iterdir()) if p.name.endswith("B40f"))
    series = load_study([folder]).default()
    pacs.store([f.dataset for f in series.files])
    study_uid = series.files[0].study_uid
    run = run_on_study(pacs, study_uid, classifier, series_uid=series.key, store=("pdf",))
    assert run.case.series["slices"] == series.size == 30
    assert run.case.counts["classified"] == 30
    assert [s.location_mm for s in run.case.slices] == sorted(f.location for f in series.files)
