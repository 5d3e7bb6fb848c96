"""int8 twin of an exported model (lungct.training.quantize): built from committed ranges, checked
on this machine, chosen by runtime.precision, refused when stale or off.

A copy of the shipped default student is exported into tmp folders: once with ranges
recorded on the committed samples, once with the committed ranges (a fresh clone's
``make onnx``), so nothing here needs the dataset. (An untrained network is no subject:
its activations are far from anything int8 is made for, and its labels flip.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lungct.cli import main as cli_main
from lungct.inference import Classifier
from lungct.models.checkpoint import MODELS_DIR, read_card
from lungct.onnx_runtime import INT8_FILE, INT8_RECORD, ONNX_FILE, int8_build, runtime_settings
from lungct.preprocess import load_image
from lungct.training import quantize
from test_onnx import SAMPLES

SHIPPED = MODELS_DIR / "student_kd"


def copy_shipped(dst, ranges: bool):
    dst.mkdir(parents=True)
    names = ["model.safetensors", "card.json"] + ([quantize.CALIBRATION_FILE] if ranges else [])
    for name in names:
        shutil.copy(SHIPPED / name, dst / name)
    return dst


def export(folder, tmp):
    return cli_main(["lab", "export", "--model", str(folder), "--set", f"data.root={tmp / 'none'}",
                     "--set", f"data.manifest={tmp / 'none.csv'}"])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny exported model with ranges recorded on the samples, then exported again (which
    builds the int8 twin from the ranges, as ``make onnx`` does)."""
    tmp = tmp_path_factory.mktemp("int8")
    folder = copy_shipped(tmp / "student", ranges=False)
    assert export(folder, tmp) == 0
    assert not (folder / INT8_FILE).exists()  # no ranges: float32 only
    clf = Classifier.from_name(folder, backend="onnx", precision="float32")
    inputs = np.stack([clf.prepare(load_image(p)) for p in SAMPLES])
    pre = quantize._prepared(folder)
    try:
        quantize.record_ranges(pre, inputs, folder / quantize.CALIBRATION_FILE)
    finally:
        shutil.rmtree(pre.parent)
    assert export(folder, tmp) == 0
    return folder


def probs(clf):
    return np.array([list(clf.predict_gray(load_image(p)).probabilities.values()) for p in SAMPLES])


def test_export_builds_a_checked_int8_twin(calibrated):
    record = json.loads((calibrated / INT8_RECORD).read_text())
    assert (calibrated / INT8_FILE).exists() and int8_build(calibrated) == calibrated / INT8_FILE
    assert record["check"]["passed"] is True and record["check"]["n"] == len(SAMPLES)
    assert record["size_mb"] < (calibrated / ONNX_FILE).stat().st_size / 2**20


def test_precision_picks_the_file(calibrated):
    fast = Classifier.from_name(calibrated, backend="onnx", precision="int8")
    full = Classifier.from_name(calibrated, backend="onnx", precision="float32")
    assert fast.describe()["precision"] == "int8"
    assert fast.onnx_model.path.name == INT8_FILE
    assert full.describe()["precision"] == "float32"
    a, b = probs(fast), probs(full)
    assert np.abs(a - b).mean() <= quantize.MAX_MEAN_DIFF
    assert not np.allclose(a, b, atol=1e-6)  # really another network


def test_stale_or_failed_builds_are_not_used(calibrated, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(calibrated, folder)
    record = json.loads((folder / INT8_RECORD).read_text())
    (folder / INT8_RECORD).write_text(json.dumps({**record, "float32_sha256": "0" * 64}))
    assert int8_build(folder) is None  # model.onnx re-exported since: float32 serves
    assert Classifier.from_name(folder, backend="onnx", precision="int8"
                                ).describe()["precision"] == "float32"
    (folder / INT8_RECORD).write_text(json.dumps({**record, "check": {"passed": False}}))
    assert int8_build(folder) is None


def test_a_build_that_disagrees_is_removed(calibrated, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(calibrated, folder)
    monkeypatch.setattr(quantize, "MAX_MEAN_DIFF", -1.0)
    assert export(folder, tmp_path) == 0
    assert not (folder / INT8_FILE).exists()
    assert json.loads((folder / INT8_RECORD).read_text())["check"]["passed"] is False
    assert Classifier.from_name(folder, backend="onnx", precision="int8"
                                ).describe()["precision"] == "float32"


def test_ranges_of_another_export_are_refused(calibrated, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(calibrated, folder)
    (folder / INT8_FILE).unlink()
    cache = json.loads((folder / quantize.CALIBRATION_FILE).read_text())
    cache["data"]["not/a/tensor"] = next(iter(cache["data"].values()))
    (folder / quantize.CALIBRATION_FILE).write_text(json.dumps(cache))
    assert export(folder, tmp_path) == 0  # float32 still exported and usable
    assert "no int8 model (float32 serves)" in capsys.readouterr().out
    assert not (folder / INT8_FILE).exists()


def test_the_build_never_rewrites_the_tracked_ranges(calibrated, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(calibrated, folder)
    before = (folder / quantize.CALIBRATION_FILE).read_bytes()
    assert export(folder, tmp_path) == 0
    assert (folder / quantize.CALIBRATION_FILE).read_bytes() == before


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        runtime_settings({"runtime": {"precision": "int4"}})
    assert runtime_settings({"runtime": {}}).precision == "float32"


def test_quantize_without_the_dataset_says_so(calibrated, tmp_path):
    rc = cli_main(["lab", "quantize", "--model", str(calibrated), "--no-write",
                   "--set", f"data.root={tmp_path / 'none'}",
                   "--set", f"data.manifest={tmp_path / 'none.csv'}"])
    assert rc == 2


def test_the_committed_ranges_build_on_a_fresh_clone(tmp_path):
    card = read_card(SHIPPED)
    assert card["int8"]["test"]["passed"] and card["int8"]["val"]["passed"]
    folder = copy_shipped(tmp_path / "student", ranges=True)
    assert export(folder, tmp_path) == 0
    assert int8_build(folder) == folder / INT8_FILE
    fast = Classifier.from_name(folder, backend="onnx", precision="int8")
    full = Classifier.from_name(folder, backend="onnx", precision="float32")
    assert np.abs(probs(fast) - probs(full)).mean() <= quantize.MAX_MEAN_DIFF
