"""The PACS round trip against a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``).

The tests start Orthanc themselves on 127.0.0.1 (a free port, a temporary storage
folder, stopped at the end). Without the binary they are skipped with the reason,
except where ``LUNGCT_REQUIRE_ORTHANC`` is set (CI), where that is a failure.
Series are synthetic (with patient tags, to check none leaks into the result's
content), the demo series of ``make pacs`` included, so the round trip runs on a
clone; the Lung-PET-CT-Dx sample is used too where ``../shared`` has it. The
client's failure modes (refused, unanswered, 503) need no Orthanc and are timed.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time

import pytest
from dicom_factory import ct_series

from lungct.config import REPO_ROOT
from lungct.pacs.client import PacsClient, PacsError
from lungct.pacs.results import sr_text
from lungct.pacs.server import LocalOrthanc, OrthancUnavailable, find_orthanc, free_port
from lungct.pacs.workflow import run_on_study
from lungct.pipeline.series import load_study, read_slice

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19600101",
       "AccessionNumber": "ACC-999", "InstitutionName": "St Example Hospital"}
SECRETS = ("Doe", "Jane", "PID-12345", "19600101", "ACC-999", "St Example")
STUDY = {"StudyDate": "20240301", "StudyDescription": "CT THORAX"}   # shown: not identifying
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
    datas = ct_series(**{"n": 6, "phi": {**PHI, **STUDY}, **kwargs})
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
    assert found[0]["date"] == "2024-03-01" and found[0]["description"] == "CT THORAX"
    listed = pacs.studies({"PatientID": "PID-12345"})
    assert study_uid in {s["study_uid"] for s in listed}
    assert all(set(s) == {"study_uid", "date", "description", "modalities", "series",
                          "instances"} for s in listed)
    for secret in SECRETS:      # searchable by patient, never shown
        assert secret not in json.dumps(listed)

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
    from lungct.pipeline.report import pdf_text
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
    assert main(["pacs", "studies", "--patient-id", "PID-12345"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(study_uid))
    assert "2024-03-01  CT THORAX  CT  1 series, 6 instances" in line
    for secret in SECRETS:
        assert secret not in out
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


def test_demo_series_round_trip(pacs, classifier):
    """The synthetic demo series of ``make pacs``: runs on a clone (the real one needs shared/)."""
    from lungct.data.demo_series import demo_series
    from lungct.pipeline.series import group_series

    files = [read_slice(f"demo{i}.dcm", d) for i, d in enumerate(demo_series(10, size=128))]
    series = group_series(files).default()
    pacs.store([f.dataset for f in reversed(series.files)])     # stored out of order
    study_uid = series.files[0].study_uid
    run = run_on_study(pacs, study_uid, classifier, series_uid=series.key, store=("pdf",))
    assert run.case.series["slices"] == series.size == 10
    assert run.case.counts["classified"] == 10
    assert [s.location_mm for s in run.case.slices] == sorted(f.location for f in series.files)
    listed = {s["modality"]: s for s in pacs.series(study_uid)}
    assert set(listed) == {"CT", "DOC"} and listed["DOC"]["number"] == 9902
    pdf = pacs.retrieve(study_uid, listed["DOC"]["series_uid"])[0]
    from lungct.pipeline.report import pdf_text
    drawn = pdf_text(bytes(pdf.EncapsulatedDocument))
    assert run.case.label in drawn and "slice 10" in drawn
    assert "DEMO" not in drawn and "LUNGCT-DEMO" not in drawn


def descriptions(pacs, study_uid) -> dict:
    return {(s["modality"], s["number"]): s["description"] for s in pacs.series(study_uid)}


def test_rerun_is_versioned_and_replace_deletes_only_our_earlier_results(pacs, classifier):
    from lungct.pacs.results import build_sr
    from lungct.pacs.workflow import earlier_results

    study_uid = put_study(pacs, n=3)
    assert run_on_study(pacs, study_uid, classifier).version == 1
    second = run_on_study(pacs, study_uid, classifier)
    assert second.version == 2 and not second.replaced
    seen = descriptions(pacs, study_uid)
    assert len(seen) == 5                       # CT + two SR/PDF pairs, told apart:
    assert seen[("SR", 9901)] == "lungct case report (SR)"
    assert seen[("SR", 9911)] == "lungct case report (SR, run 2, supersedes run 1)"
    assert seen[("DOC", 9912)] == "lungct case report (PDF, run 2, supersedes run 1)"
    assert sorted(e["version"] for e in earlier_results(pacs, study_uid)) == [1, 1, 2, 2]

    # an SR of someone else's that looks like ours is never deleted
    ct = pacs.retrieve(study_uid, next(s["series_uid"] for s in pacs.series(study_uid)
                                       if s["modality"] == "CT"))
    foreign = build_sr(second.case.as_dict(), None, ct)
    foreign.Manufacturer, foreign.SeriesNumber = "Another vendor", 77
    pacs.store([foreign])

    third = run_on_study(pacs, study_uid, classifier, replace=True)
    assert third.version == 3 and len(third.replaced) == 4
    seen = descriptions(pacs, study_uid)
    assert set(seen) == {("CT", 1), ("SR", 77), ("SR", 9921), ("DOC", 9922)}
    assert seen[("SR", 9921)].endswith("(SR, run 3, supersedes run 2)")
    # replacing only the SR keeps the earlier PDF
    fourth = run_on_study(pacs, study_uid, classifier, store=("sr",), replace=True)
    assert fourth.version == 4 and len(fourth.replaced) == 1
    assert set(descriptions(pacs, study_uid)) == {("CT", 1), ("SR", 77), ("SR", 9931),
                                                  ("DOC", 9922)}


# ------------------------------------------------- failures, timed (no Orthanc needed)

class _Unavailable(http.server.BaseHTTPRequestHandler):
    """A server (or the proxy in front of it) that answers 503 to everything."""

    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def answers_503():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


@pytest.fixture
def never_accepts():
    """A port whose accept queue is full: connecting hangs, as for a host that drops packets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/dicom-web"
    for c in fillers + [listener]:
        c.close()


def _fails_fast(client, match: str, within_s: float) -> str:
    start = time.monotonic()
    with pytest.raises(PacsError, match=match) as err:
        client.studies()
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert elapsed < within_s, f"{elapsed:.1f} s to the error"
    assert client.url in message and "\n" not in message
    return message


def test_server_down_is_reported_at_once():
    """Before: dicomweb-client retried every failure, 30 s (refused, 503) to 130 s (no answer)."""
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    message = _fails_fast(PacsClient(url), "cannot reach the PACS", 3)
    assert "server is running" in message and "LUNGCT_PACS_URL" in message


def test_unavailable_server_is_reported_at_once(answers_503, classifier):
    message = _fails_fast(PacsClient(answers_503), r"HTTP 503", 3)
    assert "unavailable" in message
    with pytest.raises(PacsError, match="not an Orthanc.*nothing stored"):
        run_on_study(PacsClient(answers_503), "1.2.3", classifier, replace=True)


def test_unanswered_connect_times_out_after_the_connect_timeout(never_accepts):
    client = PacsClient(never_accepts, connect_timeout_s=1.0)
    message = _fails_fast(client, r"no answer from the PACS .* within 1 s", 6)
    assert "network" in message


def test_timeouts_come_from_the_config():
    from lungct.pacs.client import pacs_settings
    s = pacs_settings({"pacs": {"url": "http://x/dicom-web"}})
    assert s["connect_timeout_s"] <= 5 and s["timeout_s"] >= 60
    client = PacsClient.from_config({"pacs": {"url": "http://x/dicom-web",
                                              "connect_timeout_s": 2, "timeout_s": 300}})
    assert client._client._timeout == (2.0, 300.0)


def test_pacs_run_stores_the_caution_in_the_sr_and_the_pdf(pacs, orthanc, capsys, tmp_path,
                                                            monkeypatch):
    """A series rendered unlike the training exports (a lung-window CT, as most hospitals
    export): ``pacs run`` prints the caution and stores it in the SR and the PDF."""
    import torch
    from test_caution import drawn_words, lung_window_series

    from lungct.pipeline.report import CAUTION_HEADING
    from lungct.cli import main
    from lungct.models import create_model, save_model
    torch.manual_seed(0)
    model_dir = save_model(create_model("efficientnet_lite0", pretrained=False, input_size=64),
                           tmp_path / "tiny", {"name": "tiny"})
    datas = lung_window_series(3, phi={**PHI, **STUDY})
    pacs.store(datasets(datas))
    study_uid = read_slice("x.dcm", datas[0]).study_uid
    monkeypatch.setenv("LUNGCT_PACS_URL", orthanc.dicomweb_url)
    assert main(["pacs", "run", study_uid, "--model", str(model_dir), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "CAUTION: 3 of 3 classified slices carry a caution" in out
    assert out.count("[caution]") == 3
    series = {s["modality"]: s for s in pacs.series(study_uid)}
    assert set(series) == {"CT", "SR", "DOC"}
    sr = pacs.retrieve(study_uid, series["SR"]["series_uid"])[0]
    text = "\n".join(sr_text(sr))
    assert f"{CAUTION_HEADING}: 3 of 3 classified slices carry a caution" in text
    assert "this slice's rendering is unlike the training exports" in text
    assert "(unsure; caution)" in text
    pdf = pacs.retrieve(study_uid, series["DOC"]["series_uid"])[0]
    drawn = drawn_words(bytes(pdf.EncapsulatedDocument))
    assert CAUTION_HEADING in drawn
    assert "this slice's rendering is unlike the training exports" in drawn
    for secret in SECRETS:
        assert secret not in text and secret not in drawn
