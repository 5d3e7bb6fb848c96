"""Shared fixtures of the app tests: a models folder, samples, MLflow stores, DICOM files.

The app tests use the shipped models (``models/student_kd`` with weights) when
they are there, as in CI. Without them (a fresh checkout before training) they
build tiny random-initialised stand-ins: no data set and no training needed.
Values that training may change are never asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lungct import CLASSES
from lungct.config import REPO_ROOT

SAMPLES = REPO_ROOT / "samples"
PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-12345",
       "InstitutionName": "St Example Hospital", "AccessionNumber": "ACC-98765",
       "PatientBirthDate": "19700101"}
PHI_STRINGS = ("Doe", "Jane", "PID-12345", "St Example Hospital", "ACC-98765", "19700101")


def _fake_test_predictions(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), n // len(CLASSES))
    logits = rng.normal(size=(y.size, len(CLASSES)))
    logits[np.arange(y.size), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def build_standin_models(folder: Path) -> Path:
    """Random-init student (EfficientNet-Lite0) and teacher (hybrid ViT) at 64 px, evaluated
    on fake predictions, plus a card-only VGG16 (weights not shipped, as in the repo)."""
    from lungct.training.metrics import classification_report
    from lungct.models import create_model, save_model

    y, probs = _fake_test_predictions()
    report = classification_report(y, probs, n_boot=100)
    for name, arch in (("student_kd", "efficientnet_lite0"),
                       ("teacher_hybrid_vit", "hybrid_vit_lite0")):
        model = create_model(arch, pretrained=False, input_size=64).eval()
        card = {"name": name, "description": f"test stand-in ({arch}, random weights)",
                "lungct_version": "test", "created": "2026-01-01T00:00:00+00:00",
                "protocol": "grouped", "teacher": None, "pretrained": "none",
                "training": {"history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}]},
                "val_metrics": report, "test_metrics": report,
                "calibration": {"temperature": 1.0, "ece_before": 0.1, "ece_after": 0.05},
                "stats": {"params": 1_000_000, "flops": 2_000_000, "weights_mb": 4.0,
                          "cpu_latency_ms": 12.0}}
        out = save_model(model, folder / name, card)
        rows = [{"path": f"x/{i}.jpg", "label": CLASSES[k], "probs": p.round(6).tolist()}
                for i, (k, p) in enumerate(zip(y, probs))]
        (out / "test_predictions.json").write_text(json.dumps(
            {"protocol": "grouped", "part": "test", "classes": list(CLASSES), "rows": rows}))
    vgg = folder / "vgg16_kd"
    vgg.mkdir(parents=True, exist_ok=True)
    (vgg / "card.json").write_text(json.dumps(
        {"name": "vgg16_kd", "arch": "vgg16", "protocol": "grouped",
         "description": "VGG16 student; weights not shipped"}))
    return folder


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The folder the app reads models from (``LUNGCT_MODELS`` set for the session)."""
    shipped = REPO_ROOT / "models"
    if (shipped / "student_kd" / "model.safetensors").is_file():
        folder = shipped
    else:
        folder = build_standin_models(tmp_path_factory.mktemp("models"))
    old = os.environ.get("LUNGCT_MODELS")
    os.environ["LUNGCT_MODELS"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("LUNGCT_MODELS", None)
    else:
        os.environ["LUNGCT_MODELS"] = old


@pytest.fixture(scope="session")
def sample_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(SAMPLES.glob("*.jpg"))}


@pytest.fixture
def samples_as_test_part(tmp_path, monkeypatch) -> str:
    """The shipped samples as a tiny data set (``LUNGCT_DATA`` set), every slice its own
    pseudo-patient in the test part of both splits: commands that run over a model's test
    part (robustness, lesion-check) run on them. Returns the ``--set`` that points
    ``data.manifest`` at its manifest."""
    import shutil

    root = tmp_path / "data"
    root.mkdir()
    lines = ["path,label,md5,group,paper_split,grouped_split"]
    for i, p in enumerate(sorted(SAMPLES.glob("*.jpg"))):
        shutil.copy(p, root / p.name)
        lines.append(f"{p.name},{p.name.split('_')[0]},x,g{i},test,test")
    (tmp_path / "splits.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LUNGCT_DATA", str(root))
    return f"data.manifest={tmp_path / 'splits.csv'}"


def make_dicom(phi: dict = PHI, modality: str = "CT", size: int = 64) -> bytes:
    """A small synthetic CT DICOM (Part 10) carrying patient-identifying tags."""
    import io

    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    for key, value in phi.items():
        setattr(ds, key, value)
    yy, xx = np.mgrid[:size, :size]
    hu = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2, -800, 40)
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def phi_dicom() -> bytes:
    return make_dicom()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A SQLite MLflow store with two finished runs of the app's experiment."""
    from mlflow.tracking import MlflowClient

    from lungct.config import load_config

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(load_config()["tracking"]["experiment"])
    for name, lr in (("student_kd", 0.0005), ("student_plain", 0.001)):
        run = client.create_run(exp_id, run_name=name, tags={"model_name": name})
        client.log_param(run.info.run_id, "train.lr", lr)
        client.log_param(run.info.run_id, "train.model", "efficientnet_lite0")
        for epoch in range(1, 4):
            client.log_metric(run.info.run_id, "val_loss", 1.0 / epoch, step=epoch)
            client.log_metric(run.info.run_id, "val_acc", 0.5 + 0.1 * epoch, step=epoch)
        client.log_metric(run.info.run_id, "final_val_accuracy", 0.8)
        client.set_terminated(run.info.run_id)
    return uri


class FakeGuard:
    """Rejects dark slices, as the OOD guard rejects what is unlike a lung CT slice."""

    def __init__(self, fail: bool = False):
        self.fail, self.calls = fail, 0

    def prepare(self, gray, data=None, seg=None):
        return gray

    def check_prepared(self, grays):
        from lungct.guard import Verdict
        self.calls += 1
        if self.fail:
            raise RuntimeError("guard exploded")
        return [Verdict(g.mean() > 0.05, float(g.mean()), 0.05,
                        "not a lung CT slice: no classification (test)") for g in grays]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine
    spinning OpenMP workers make them ~10x slower; restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
