"""Patient data in a DICOM never leaves the process: not in results, output, logs, warnings,
error messages, or files.

A synthetic CT DICOM carries PatientName, PatientID, PatientBirthDate, AccessionNumber,
InstitutionName, StudyDate and ReferringPhysicianName (one variant also hides the name in
a malformed WindowCenter value, which pydicom would quote in a warning). It goes through
``decode_image``, the OOD guard, ``Classifier.predict_bytes`` -> ``as_dict`` -> JSON, and
the CLI ``predict --json``; corrupted variants go through the error paths. Writes are
watched three ways: an audit hook records every file this process opens for writing
(and renames, removes, mkdirs, temp files) while the pipeline runs; the temporary
directory is redirected to an empty folder that must stay empty; and file snapshots of
the repository and the system temp dir are compared before/after (changed files must
not contain any identifier; in the repository nothing may change outside the folders
that a background training run writes to).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import ct_dataset
from PIL import Image

from lungct import guard as ood

from lungct.config import REPO_ROOT
from lungct.preprocess import WINDOWS, InvalidImageError, decode_image

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345",
    "PatientBirthDate": "19600101",
    "AccessionNumber": "ACC-999",
    "InstitutionName": "St Example Hospital",
    "StudyDate": "20230415",
    "ReferringPhysicianName": "Smith^John",
}
TOKENS = ("Doe^Jane", "Doe", "Jane", "PID-12345", "19600101", "ACC-999",
          "St Example Hospital", "Example Hospital", "20230415", "Smith^John", "Smith", "John")
FILE_TOKENS = (b"Doe^Jane", b"PID-12345", b"19600101", b"ACC-999", b"St Example Hospital",
               b"20230415", b"Smith^John")
# Folders under the repository that other processes (a training run, MLflow, DVC) write to.
EXTERNAL_WRITERS = ("logs", "mlruns", "mlartifacts", "mlflow.db", "models", "reports", "dvc_cache",
                    ".dvc")
SKIP_DIRS = {"__pycache__", ".git", ".venv", ".pytest_cache", ".hypothesis"}


def phi_dicom(pixels=True, bad_window=False, truncate=False) -> bytes:

    u8 = np.asarray(Image.open(REPO_ROOT / "samples" / "benign_1.jpg").convert("L"))
    width, level = WINDOWS["lung"]
    hu = u8 / 255.0 * width + (level - width / 2)
    ds = ct_dataset()
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if bad_window:  # placeholders, swapped for non-numeric PHI in the bytes below
        ds.WindowCenter, ds.WindowWidth = "-600.12345", "1500.12345"
    if pixels:
        ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if bad_window:  # malformed DS values that quote the patient (pydicom would warn with them)
        data = data.replace(b"-600.12345", b"Doe^Jane  ").replace(b"1500.12345", b"PID-12345 ")
    return data[:-20000] if truncate else data


# ------------------------------------------------------------ write watch

class _Watch:
    active = False
    events: list = []
    installed = False


def _audit(event, args):
    if not _Watch.active:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = isinstance(flags, int) and bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writes and not isinstance(path, int):
            _Watch.events.append((event, str(path)))
    elif event in ("os.remove", "os.rename", "os.replace", "os.mkdir", "os.truncate",
                   "os.symlink", "os.link", "shutil.copyfile", "shutil.move", "shutil.rmtree",
                   "tempfile.mkstemp", "tempfile.mkdtemp"):
        _Watch.events.append((event, repr(args)[:200]))


@contextmanager
def no_writes():
    """Record write-like file operations of this process while the block runs."""
    if not _Watch.installed:
        sys.addaudithook(_audit)  # cannot be removed; inert while inactive
        _Watch.installed = True
    _Watch.events = []
    _Watch.active = True
    try:
        yield _Watch.events
    finally:
        _Watch.active = False


def snapshot(root: Path, skip: set[Path] = frozenset()) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in SKIP_DIRS and Path(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict, after: dict) -> list[str]:
    return sorted(p for p, v in after.items() if before.get(p) != v)


def holds_phi(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            data = fh.read(50_000_000)
    except OSError:
        return False
    return any(t in data for t in FILE_TOKENS)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random model on disk (this test is about plumbing, not accuracy)."""
    import torch

    from lungct.models import create_model, save_model
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=64)
    return save_model(model, tmp_path_factory.mktemp("phi_model") / "tiny",
                      card={"name": "tiny", "protocol": "grouped"})


@pytest.fixture(scope="module")
def classifier(model_dir):
    from lungct.inference import Classifier
    from lungct.models import load_model
    return Classifier(load_model(model_dir))


@pytest.fixture(scope="module")
def guard():
    if not (ood.guard_dir() / ood.WEIGHTS_FILE).exists():
        return None
    return ood.InputGuard.load()


def assert_clean(*texts: str) -> None:
    for text in texts:
        for token in TOKENS:
            assert token not in text, f"{token!r} leaked: {text[:300]!r}"


# ------------------------------------------------------------------- tests

def test_the_fixture_really_carries_phi():
    data = phi_dicom()
    assert all(v.encode() in data for v in PHI.values())
    assert all(t in data for t in FILE_TOKENS)


def test_no_phi_anywhere(classifier, model_dir, guard, capsys, caplog, tmp_path, monkeypatch):
    from lungct.cli import main

    uploads = {"scan.dcm": phi_dicom(), "badwindow.dcm": phi_dicom(bad_window=True),
               "nopixels.dcm": phi_dicom(pixels=False), "truncated.dcm": phi_dicom(truncate=True)}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, data in uploads.items():
        (inputs / name).write_bytes(data)
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    # onnxruntime's native code writes $TMPDIR/.ses (first-launch time + a random session id,
    # no input data) at import, once per temp dir; import it before redirecting TMPDIR, as the
    # app and the CLI import it at start-up anyway.
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    caplog.set_level(logging.DEBUG)
    logging.getLogger("pydicom").setLevel(logging.DEBUG)

    system_tmp = Path(tempfile.gettempdir()).resolve()
    skip = {tmp_path.resolve()}
    repo_before = snapshot(REPO_ROOT)
    tmp_before = snapshot(system_tmp, skip)

    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught, no_writes() as writes:
        warnings.simplefilter("always")
        for name in ("scan.dcm", "badwindow.dcm"):
            data = uploads[name]
            for window in ("lung", "file", "mediastinal"):
                gray = decode_image(data, name=name, window=window)
                assert gray.shape == (512, 512)
            if guard is not None:
                verdict = guard.check_upload(data, gray)
                texts.append(json.dumps(verdict.as_dict()))
            pred = classifier.predict_bytes(data, name=name, window="file")
            texts.append(json.dumps(pred.as_dict()))
            texts.append(repr(pred))
        for name in ("nopixels.dcm", "truncated.dcm"):
            with pytest.raises(InvalidImageError) as info:
                decode_image(uploads[name], name=name)
            texts += [str(info.value), repr(info.value)]
            with pytest.raises(InvalidImageError) as info:
                classifier.predict_bytes(uploads[name], name=name)
            texts.append(str(info.value))
            cause = info.value.__cause__ or info.value.__context__
            texts.append(repr(cause) if cause else "")
        code = main(["predict", "--json", "--model", str(model_dir)]
                    + [str(inputs / n) for n in uploads])
        code_dir = main(["predict", "--model", str(model_dir), str(inputs)])
    out, err = capsys.readouterr()
    assert code == 0 and code_dir == 0

    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == len(uploads)
    assert sum("error" in d for d in lines) == 2 and sum("label" in d for d in lines) == 2
    texts += [out, err]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records if r.args]
    texts += [str(w.message) for w in caught]
    assert_clean(*texts)

    assert not writes, f"files written while handling PHI: {writes}"
    assert not any(private_tmp.iterdir()), list(private_tmp.iterdir())
    repo_changed = changed(repo_before, snapshot(REPO_ROOT))
    tmp_changed = changed(tmp_before, snapshot(system_tmp, skip))
    assert not [p for p in repo_changed + tmp_changed if holds_phi(p)]
    ours = [p for p in repo_changed
            if Path(p).relative_to(REPO_ROOT).parts[0] not in EXTERNAL_WRITERS]
    assert not ours, f"repository files changed: {ours}"


def test_error_messages_do_not_quote_the_name_through_the_file_name(tmp_path, capsys):
    """Even a DICOM with no pixels under a plain file name reports only the reason."""
    from lungct.cli import main
    path = tmp_path / "study.dcm"
    path.write_bytes(phi_dicom(pixels=False))
    # the model fails to load on purpose: the error path must be clean too
    code = main(["predict", "--json", "--model", str(tmp_path / "no_such_model"), str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert_clean(out, err)


def test_ood_check_cli_is_clean(tmp_path, capsys, guard):
    if guard is None:
        pytest.skip("no fitted OOD guard")
    paths = []
    for name, data in (("a.dcm", phi_dicom()), ("b.dcm", phi_dicom(pixels=False))):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    from lungct.cli import main
    assert main(["guard", "check"] + paths) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert_clean(out, err)


def test_series_case_sr_and_pdf_carry_no_patient_data(caplog, recwarn):
    """A series with patient tags -> case JSON, CSV export, PDF report and SR content: no PHI.

    (The SR and PDF DICOM headers repeat the study's patient module, which is how a
    PACS files them under their study; what they *say* must name nobody.)
    """
    from test_case import BatchClassifier

    from lungct.app_support.study import export_csv
    from lungct.pipeline import run_case
    from lungct.pipeline.report import case_pdf, pdf_text
    from lungct.data.demo_series import synthetic_series
    from lungct.pacs.results import build_pdf, build_sr, sr_text
    from lungct.pipeline.series import read_slice

    phi = {k: v for k, v in PHI.items()}
    datas = synthetic_series(5, phi=phi)
    caplog.set_level(logging.DEBUG)
    case = run_case([(f"slice{i}.dcm", d) for i, d in enumerate(datas)], BatchClassifier())
    sources = [read_slice("x", d).dataset for d in datas]
    sr = build_sr(case.as_dict(), None, sources)
    pdf = build_pdf(case.as_dict(), None, sources)
    outputs = [json.dumps(case.as_dict()), export_csv(case).decode(), "\n".join(sr_text(sr)),
               pdf_text(case_pdf(case.as_dict())), pdf_text(bytes(pdf.EncapsulatedDocument)),
               caplog.text,
               " ".join(str(w.message) for w in recwarn)]
    for text in outputs:
        for token in TOKENS:
            assert token not in text
    assert case.counts["classified"] == 5
    assert f"({case.label})" in outputs[4] or case.label in outputs[4]   # the text was read
    assert "slice 5" in outputs[3] and "slice 5" in outputs[2]
