"""The case pipeline (lungct.pipeline.case) and series input (lungct.pipeline.series): order, grouping,
limits, guard states, batching, the ``case`` command and its exit codes.

Series are synthesised (tests/dicom_factory.py); ``../shared`` is not needed.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from dicom_factory import ct_series

from lungct import CLASSES
import lungct.guard
from lungct import pipeline as case_mod
from lungct.pipeline import ClassifierBase
from lungct.pipeline import SliceResult, analyse_slices, case_verdict, counts, run_case
from lungct.cli import main
from lungct.inference import Prediction
from lungct.pipeline.series import (StudyLimitError, group_series, is_lung_kernel, load_study,
                           natural_key, read_inputs)

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "InstitutionName": "St Example"}


class BatchClassifier(ClassifierBase):
    """Labels by mean brightness; counts forward passes (a batch is one call)."""

    unsure_below, name = 0.6, "fake"

    def __init__(self):
        self.calls = []

    def prepare(self, gray, seg=None):
        return np.asarray([gray.mean()], np.float32)

    def predict_prepared(self, arrays):
        self.calls.append(len(arrays))
        out = []
        for a in arrays:
            m = float(a[0])
            probs = dict(zip(CLASSES, (1 - m, m / 4, 3 * m / 4)))
            label = max(probs, key=probs.get)
            out.append(Prediction(label, probs, "fake", probs[label] < 0.6))
        return out


@dataclass(frozen=True)
class StatusVerdict:
    """A ``lungct.pipeline.Verdict``: a status, a reason and the record it exports."""

    status: str
    reason: str
    score: float = 1.0
    threshold: float = 2.0

    def as_dict(self):
        return {"status": self.status, "score": self.score}


class StatusGuard:
    """Says 'outside_lungs' for the first ``n_out`` slices it sees, accepts the rest."""

    def __init__(self, n_out: int):
        self.n_out = n_out

    def prepare(self, gray, data=None, seg=None):
        return gray

    def check_prepared(self, grays):
        return [StatusVerdict("outside_lungs", "outside the lungs (test)") if i < self.n_out
                else StatusVerdict("accepted", "ok") for i, _ in enumerate(grays)]


def named(datas, prefix="IM", ext=".dcm"):
    return [(f"{prefix}{i}{ext}", d) for i, d in enumerate(datas)]


# ------------------------------------------------------------------ series

def test_series_sorted_along_the_normal_whatever_the_file_order():
    datas = ct_series(9, z0=-200.0, thickness=2.5)
    files = named(datas)
    random.Random(0).shuffle(files)
    series = load_study(files).default()
    z = [f.location for f in series.files]
    assert z == pytest.approx([-200.0 + 2.5 * i for i in range(9)], abs=1e-6)
    assert series.ordering.startswith("ImagePositionPatient")


def test_feet_first_orientation_still_sorts_along_the_normal():
    # row x column = (1,0,0) x (0,-1,0) = (0,0,-1): positions run the other way
    datas = ct_series(5, orientation=(1, 0, 0, 0, -1, 0), z0=0.0, thickness=5.0)
    series = load_study(named(datas)).default()
    assert [f.image_position[2] for f in series.files] == pytest.approx([20, 15, 10, 5, 0])
    assert series.axial is True


def test_instance_number_is_the_fallback_order():
    datas = ct_series(6, positions=False)
    files = named(datas)[::-1]
    series = load_study(files).default()
    assert [f.instance_number for f in series.files] == [1, 2, 3, 4, 5, 6]
    assert series.ordering == "InstanceNumber"


def test_raster_files_in_natural_name_order(sample_bytes):
    files = [(f"slice{i}.jpg", sample_bytes["normal_1.jpg"]) for i in (10, 2, 1, 33, 3)]
    series = load_study(files).default()
    assert [f.name for f in series.files] == [f"slice{i}.jpg" for i in (1, 2, 3, 10, 33)]
    assert natural_key("a2") < natural_key("a10")


def test_grouped_by_series_default_axial_most_slices_lung_kernel_first():
    study_uid = "1.2.3.4"
    soft = ct_series(6, kernel="B30f", study_uid=study_uid)
    lung = ct_series(6, kernel="B70f", study_uid=study_uid)
    sagittal = ct_series(10, orientation=(0, 1, 0, 0, 0, -1), study_uid=study_uid)
    files = named(soft, "a") + named(sagittal, "b") + named(lung, "c")
    study = load_study(files)
    assert sorted(s.size for s in study.series) == [6, 6, 10]
    chosen = study.default()
    assert chosen.size == 6 and chosen.files[0].kernel == "B70f" and chosen.axial
    assert study.pick(0).size == 10     # listed largest first; any series can be picked
    with pytest.raises(ValueError, match="3 series"):
        study.pick(7)


@pytest.mark.parametrize("kernel, lung", [("B70f", True), ("LUNG", True), ("L", True),
                                          ("FC86", True), ("B40f", False), ("STANDARD", False),
                                          ("B", False), ("", False)])
def test_lung_kernel_from_tags(kernel, lung):
    assert is_lung_kernel(kernel) is lung


def test_broken_and_foreign_files_are_reported_and_the_rest_goes_on():
    datas = ct_series(4)
    files = named(datas) + [("truncated.dcm", datas[0][:300]), ("notes.txt", b"hello there"),
                            ("empty.dcm", b"")]
    study = load_study(files)
    assert study.default().size == 4
    assert {p.name for p in study.problems} >= {"truncated.dcm", "empty.dcm"}
    case = run_case(files, BatchClassifier())
    # the text file is no DICOM: it joins the raster series, not the CT series
    assert case.series["slices"] == 4 and case.counts["classified"] == 4
    assert case.as_dict()["unreadable_files"] == len(case.problems) >= 2


def test_zip_archive_and_folder_give_the_same_series(tmp_path):
    datas = ct_series(5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in named(datas)[::-1]:
            z.writestr(f"study/{name}", data)
        z.writestr("__MACOSX/._IM0.dcm", b"junk")
    folder = tmp_path / "study"
    folder.mkdir()
    for name, data in named(datas):
        (folder / name).write_bytes(data)
    (tmp_path / "s.zip").write_bytes(buf.getvalue())
    from_zip = load_study([tmp_path / "s.zip"]).default()
    from_upload = load_study([("s.zip", buf.getvalue())]).default()
    from_folder = load_study([folder]).default()
    for s in (from_zip, from_upload):
        assert [f.location for f in s.files] == [f.location for f in from_folder.files]
        assert s.size == 5


def test_limits_on_file_count_and_total_size(tmp_path):
    datas = ct_series(4)
    with pytest.raises(StudyLimitError, match="more than 3 files.*series.max_files"):
        read_inputs(named(datas), limits={"max_files": 3, "max_total_mb": 100})
    with pytest.raises(StudyLimitError, match="MB in total.*series.max_total_mb"):
        read_inputs(named(datas), limits={"max_files": 100, "max_total_mb": 0.01})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:   # a small zip bomb
        z.writestr("big.dcm", b"\0" * (5 * 2**20))
    with pytest.raises(StudyLimitError):
        read_inputs([("bomb.zip", buf.getvalue())], limits={"max_files": 10, "max_total_mb": 1})


def test_limits_come_from_params(tmp_path, capsys):
    folder = tmp_path / "s"
    folder.mkdir()
    for name, data in named(ct_series(3)):
        (folder / name).write_bytes(data)
    rc = main(["case", str(folder), "--set", "series.max_files=2", "--list-series"])
    assert rc == 2 and "series.max_files" in capsys.readouterr().err


def test_each_dicom_is_parsed_once(monkeypatch):
    import pydicom
    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(1) or real(*a, **k))
    case = run_case(named(ct_series(5)), BatchClassifier())
    assert len(calls) == 5 and case.counts["classified"] == 5


# ---------------------------------------------------------------- pipeline

def test_batched_classification_one_pass_per_batch():
    clf = BatchClassifier()
    files = load_study(named(ct_series(10))).default().files
    results = analyse_slices(clf, files, batch_size=4)
    assert clf.calls == [4, 4, 2]
    assert [r.position for r in results] == list(range(1, 11))
    assert all(r.ok and r.total == 10 for r in results)


def test_outside_lungs_is_neither_normal_nor_an_error():
    files = load_study(named(ct_series(6))).default().files
    results = analyse_slices(BatchClassifier(), files, guard=StatusGuard(n_out=2))
    assert [r.status for r in results] == ["outside_lungs"] * 2 + ["classified"] * 4
    assert counts(results) == {"classified": 4, "outside_lungs": 2, "refused": 0, "error": 0}
    assert results[0].prediction is None and results[0].as_dict()["status"] == "outside_lungs"
    assert case_verdict(results)["n_slices"] == 4


def test_a_verdict_without_status_maps_to_refused(sample_bytes):
    from conftest import FakeGuard
    black = io.BytesIO()
    from PIL import Image
    Image.new("L", (64, 64)).save(black, format="PNG")
    results = run_case([("a.png", sample_bytes["normal_1.jpg"]), ("b.png", black.getvalue())],
                       BatchClassifier(), guard=FakeGuard()).slices
    assert [r.status for r in results] == ["classified", "refused"]


def test_non_ct_modality_refused_by_its_tag():
    files = load_study(named(ct_series(3, modality="MR"))).default().files
    from conftest import FakeGuard
    guard = FakeGuard()
    results = analyse_slices(BatchClassifier(), files, guard=guard)
    assert all(r.status == "refused" and "MR" in r.error for r in results)
    assert guard.calls == 0


def test_nothing_classified_is_refused():
    case = run_case(named(ct_series(3, modality="MR")), BatchClassifier(),
                    guard=StatusGuard(0))
    d = case.as_dict()
    assert d["verdict"] == "refused" and d["rule"].startswith("refused")
    assert case.verdict is None


def test_case_export_carries_positions_not_names_or_tags():
    files = [(f"Doe^Jane_{i}.dcm", d) for i, d in enumerate(ct_series(4, phi=PHI))]
    case = run_case(files, BatchClassifier())
    text = json.dumps(case.as_dict())
    for secret in ("Doe", "Jane", "PID-12345", "St Example"):
        assert secret not in text
    assert case.slices[0].name.startswith("Doe^Jane")    # the user's own screen keeps it
    assert [s["index"] for s in case.as_dict()["slices"]] == [1, 2, 3, 4]


def test_a_failing_slice_does_not_sink_its_batch():
    class Picky(BatchClassifier):
        def predict_prepared(self, arrays):
            if any(a[0] > 0.45 for a in arrays) and len(arrays) > 0:
                if len(arrays) == 1 and arrays[0][0] > 0.45:
                    raise RuntimeError("boom")
                if len(arrays) > 1:
                    raise RuntimeError("boom")
            return super().predict_prepared(arrays)
    files = load_study(named(ct_series(4))).default().files
    results = analyse_slices(Picky(), files)
    assert any(r.status == "error" for r in results)
    assert any(r.ok for r in results)


def test_top_level_api_is_lazy():
    import subprocess
    import sys
    code = ("import sys, lungct; assert 'torch' not in sys.modules; "
            "assert callable(lungct.run_case) and callable(lungct.load_guard); "
            "lungct.Classifier; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- commands

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from lungct.models import create_model, save_model
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=64)
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny", {"name": "tiny"})


@pytest.fixture
def series_folder(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    datas = ct_series(6, phi=PHI)
    for i, d in enumerate(datas):
        (folder / f"{(i * 7) % 6}.dcm").write_bytes(d)   # names say nothing about order
    (folder / "broken.dcm").write_bytes(datas[0][:200])
    return folder


def test_case_command_prints_one_json_object(tiny_model_dir, series_folder, capsys,
                                             monkeypatch):
    monkeypatch.delenv("LUNGCT_BACKEND", raising=False)
    rc = main(["case", str(series_folder), "--json", "--model", str(tiny_model_dir),
               "--no-guard", "--backend", "torch"])
    out = capsys.readouterr().out
    d = json.loads(out)          # exactly one object
    assert rc == 0 and d["verdict"] in CLASSES and d["rule"] == case_mod.CASE_RULE
    assert [s["index"] for s in d["slices"]] == list(range(1, 7))
    z = [s["location_mm"] for s in d["slices"]]
    assert z == sorted(z)
    assert all(s["status"] == "classified" and
               sum(s["probabilities"].values()) == pytest.approx(1, abs=1e-5)
               for s in d["slices"])
    assert d["series"]["modality"] == "CT" and d["series"]["slices"] == 6
    assert d["series"]["slice_thickness_mm"] == pytest.approx(5.0)
    assert d["model"]["name"] == "tiny" and d["model"]["version"]
    assert d["unreadable_files"] == 1
    for secret in ("Doe", "PID-12345", "St Example", "broken"):
        assert secret not in out


def test_case_command_table_and_exit_codes(tiny_model_dir, series_folder, tmp_path, capsys,
                                           monkeypatch):
    rc = main(["case", str(series_folder), "--model", str(tiny_model_dir), "--no-guard",
               "--backend", "torch"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("verdict: ") and "6 classified" in out
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(b"not dicom at all" * 20)
    rc = main(["case", str(junk), "--json", "--model", str(tiny_model_dir), "--no-guard"])
    captured = capsys.readouterr()
    assert rc == 1 and json.loads(captured.out)["verdict"] == "refused"
    assert "error: no" in captured.err
    mr = tmp_path / "mr"
    mr.mkdir()
    for i, d in enumerate(ct_series(2, modality="MR")):
        (mr / f"{i}.dcm").write_bytes(d)
    monkeypatch.setattr(lungct.guard, "load_guard", lambda path=None, cfg=None: StatusGuard(0))
    rc = main(["case", str(mr), "--json", "--model", str(tiny_model_dir)])
    d = json.loads(capsys.readouterr().out)
    assert rc == 1 and d["verdict"] == "refused"
    assert all(s["status"] == "refused" for s in d["slices"])


def test_predict_exits_non_zero_when_every_file_fails(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    rc = main(["predict", str(bad), "--model", str(tiny_model_dir), "--no-guard"])
    assert rc == 1 and "none of the 1 files" in capsys.readouterr().err


def test_reclassify_swaps_the_first_models_caution_for_the_seconds():
    """The Compare page's path: one decoded and guarded slice, another model's answer; the
    first model's caution leaves the warning, the slice's own warning stays."""
    from lungct.pipeline import classify, reclassify

    class Cautioned(BatchClassifier):
        card = {"rendering_robustness": {"kinds": {"lung_window_imitation": {
            "normal_called_malignant": 0.9}}}}

    r = SliceResult(1, 1, ".dcm", gray=np.full((32, 32), 0.4, np.float32), lung_window=True,
                    warning="DICOM modality is MR: treat this result with extra caution.")
    classify(Cautioned(), [r])
    assert r.caution and r.caution in r.warning and r.prediction.unsure
    other = reclassify(r, BatchClassifier())
    assert other.ok and other.caution is None
    assert other.warning == "DICOM modality is MR: treat this result with extra caution."
    assert r.caution in r.warning and other.prediction is not r.prediction   # r unchanged
    again = reclassify(other, Cautioned())
    assert again.warning == r.warning and again.caution == r.caution
