"""ONNX export and runtime: parity with PyTorch, fallbacks, lazy PyTorch model.

Tiny untrained models (64 px) are exported into tmp folders and checked on
the committed samples, so nothing here needs the dataset or trained weights.
Shipped models in models/ that have a model.onnx are checked too.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lungct.cli import main as cli_main
from lungct.config import load_config, resolve
from lungct.inference import Classifier, Prediction
from lungct.models import create_model, list_shipped, load_model, save_model
from lungct.models.checkpoint import MODELS_DIR, read_card, write_card
from lungct.training.onnx_export import PARITY_TOLERANCE, export_model, parity_check
from lungct.onnx_runtime import (BUILD_RECORD, ONNX_FILE, OnnxUnavailable, export_record,
                                 file_sha256, load_onnx, runtime_settings)

SAMPLES = sorted(resolve("samples").glob("*.jpg"))
ARCHS = ["efficientnet_lite0", "hybrid_vit_lite0"]


def no_dataset_cfg(tmp: Path) -> dict:
    """The repository config with the dataset pointed away: parity falls back to samples."""
    cfg = load_config()
    cfg["data"]["root"] = str(tmp / "no-dataset")
    cfg["data"]["manifest"] = str(tmp / "no-manifest.csv")
    return cfg


def make_model(folder: Path, arch: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, input_size=64)
    # an untrained head gives near-uniform probabilities; scale it so labels are decisive
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.mul_(20)
    save_model(model, folder, {"protocol": "grouped", "calibration": {"temperature": 1.3}})
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One exported tiny model per architecture; the Lite0 one through the CLI."""
    tmp = tmp_path_factory.mktemp("onnx_models")
    out = {}
    for arch in ARCHS:
        folder = make_model(tmp / arch, arch)
        if arch == "efficientnet_lite0":
            rc = cli_main(["lab", "export", "--model", str(folder), "--write-card",
                           "--set", f"data.root={tmp / 'no-dataset'}",
                           "--set", f"data.manifest={tmp / 'no-manifest.csv'}"])
            assert rc == 0
        else:
            export_model(folder, no_dataset_cfg(tmp), write_card_=True)
        out[arch] = folder
    return out


def sample_bytes() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in SAMPLES]


def assert_same(a: list[Prediction], b: list[Prediction], tol: float = PARITY_TOLERANCE):
    assert [p.label for p in a] == [p.label for p in b]
    pa = np.array([list(p.probabilities.values()) for p in a])
    pb = np.array([list(p.probabilities.values()) for p in b])
    assert np.abs(pa - pb).max() <= tol


def predict_samples(clf: Classifier) -> list[Prediction]:
    return [clf.predict_bytes(data, name=name) for name, data in sample_bytes()]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_records_contract_and_parity(exported, arch):
    folder = exported[arch]
    assert (folder / ONNX_FILE).is_file()
    card = read_card(folder)
    section = card["onnx"]
    assert section["input_size"] == 64 and section["classes"] == list(card["classes"])
    assert section["mean"] == card["mean"] and section["std"] == card["std"]
    assert section["input_name"] == "input" and section["output_name"] == "logits"
    assert section["dynamic_axes"]["input"] == {"0": "batch"}
    assert section["opset"] >= 13
    assert section["weights_sha256"] == file_sha256(folder / "model.safetensors")
    parity = section["parity"]
    assert parity["n"] == len(SAMPLES)
    assert "samples" in parity["images"] and "dataset absent" in parity["images"]
    assert parity["labels_identical"] is True and parity["passed"] is True
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert card["calibration"]["temperature"] == 1.3  # other card keys kept
    assert json.loads((folder / BUILD_RECORD).read_text()) == section  # the build record too


def test_plain_export_leaves_the_card_alone(exported, tmp_path):
    """A build (make app / make test) writes onnx.json, never the tracked card."""
    folder = copy_model(exported["efficientnet_lite0"], tmp_path / "plain_export")
    (folder / ONNX_FILE).unlink()
    (folder / BUILD_RECORD).unlink()
    before = (folder / "card.json").read_bytes()
    assert cli_main(["lab", "export", "--model", str(folder),
                     "--set", f"data.root={tmp_path / 'no-dataset'}",
                     "--set", f"data.manifest={tmp_path / 'no-manifest.csv'}"]) == 0
    assert (folder / "card.json").read_bytes() == before
    record = json.loads((folder / BUILD_RECORD).read_text())
    assert record["onnx_sha256"] == file_sha256(folder / ONNX_FILE)
    assert Classifier.from_name(folder, backend="onnx").backend == "onnx"


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_matches_pytorch_on_samples(exported, arch):
    onnx_clf = Classifier.from_name(exported[arch], backend="onnx")
    torch_clf = Classifier(load_model(exported[arch]))
    assert onnx_clf.backend == "onnx" and torch_clf.backend == "torch"
    assert onnx_clf.temperature == torch_clf.temperature == 1.3
    a, b = predict_samples(onnx_clf), predict_samples(torch_clf)
    assert_same(a, b)
    assert {p.backend for p in a} == {"onnx"} and {p.backend for p in b} == {"torch"}
    # batched path agrees with the one-by-one path, in order
    from lungct.preprocess import decode_image
    grays = [decode_image(d) for _, d in sample_bytes()]
    assert_same(onnx_clf.predict_many(grays, batch_size=4), a)


def _shipped_with_onnx() -> list[str]:
    return [n for n in list_shipped() if (MODELS_DIR / n / ONNX_FILE).exists()
            and (MODELS_DIR / n / "model.safetensors").exists()]


NO_SHIPPED_ONNX = pytest.mark.skip(reason="no shipped model has a model.onnx "
                                          "(python -m lungct lab export)")


@pytest.mark.parametrize("name", _shipped_with_onnx() or [pytest.param(None,
                                                                       marks=NO_SHIPPED_ONNX)])
def test_shipped_onnx_matches_pytorch(name):
    folder = MODELS_DIR / name
    card = read_card(folder)
    try:
        onnx_model = load_onnx(folder, card)
    except OnnxUnavailable as err:
        if "other weights" in str(err):
            pytest.skip(f"{name}: stale model.onnx (retrained since): {err}")
        raise
    onnx_clf = Classifier(None, onnx=onnx_model, card=card, folder=folder)
    parity = export_record(folder, card)["parity"]
    assert parity["passed"] is True and parity["labels_identical"] is True
    # 1e-4 when the export met it on the test split, else the runtime's bound (see parity_check)
    tol = PARITY_TOLERANCE if parity.get("within_tolerance") else parity.get(
        "max_diff_allowed", 1e-3)
    assert_same(predict_samples(onnx_clf), predict_samples(Classifier(load_model(folder))), tol)


def test_classification_through_onnx_does_not_load_torch(exported):
    clf = Classifier.from_name(exported["efficientnet_lite0"], backend="onnx")
    predict_samples(clf)
    assert clf._torch_model is None and not clf.torch_loaded
    assert clf.describe()["backend"] == "onnx"
    model = clf.model  # Grad-CAM's door: loads the weights now
    assert isinstance(model, torch.nn.Module) and clf.torch_loaded
    assert clf.torch_model is model
    assert model.input_size == clf.size and tuple(model.classes) == clf.classes
    from lungct.explain import explain
    from lungct.preprocess import decode_image
    gray = decode_image(SAMPLES[0].read_bytes())
    heat = explain(clf.model, gray)
    assert heat.heatmap.shape == gray.shape and heat.target_class == clf.predict_gray(gray).label
    assert clf.backend == "onnx"  # classification stays on ONNX Runtime


def test_without_onnxruntime_falls_back_to_pytorch(exported, monkeypatch):
    folder = exported["hybrid_vit_lite0"]
    expected = predict_samples(Classifier.from_name(folder, backend="onnx"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    clf = Classifier.from_name(folder, backend="auto")
    assert clf.backend == "torch" and clf.torch_loaded
    assert "onnxruntime is not installed" in clf.fallback_reason
    assert_same(predict_samples(clf), expected)
    with pytest.raises(OnnxUnavailable, match="onnxruntime is not installed"):
        Classifier.from_name(folder, backend="onnx")


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_onnx_warns_and_falls_back(exported, tmp_path):
    folder = copy_model(exported["efficientnet_lite0"], tmp_path / "corrupt")
    (folder / ONNX_FILE).write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.warns(RuntimeWarning, match="corrupt or not a valid ONNX model"):
        clf = Classifier.from_name(folder)
    assert clf.backend == "torch"
    assert "corrupt" in clf.fallback_reason
    expected = predict_samples(Classifier.from_name(exported["efficientnet_lite0"],
                                                    backend="onnx"))
    assert_same(predict_samples(clf), expected)
    with pytest.raises(OnnxUnavailable, match="corrupt"):
        Classifier.from_name(folder, backend="onnx")
    # a truncated file as well
    data = (exported["efficientnet_lite0"] / ONNX_FILE).read_bytes()
    (folder / ONNX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="ONNX"):
        assert Classifier.from_name(folder).backend == "torch"


def test_stale_onnx_after_retraining_is_refused(exported, tmp_path):
    folder = copy_model(exported["efficientnet_lite0"], tmp_path / "stale")
    card = read_card(folder)
    make_model(folder, "efficientnet_lite0", seed=1)  # "retrained": new weights, old onnx
    write_card(folder, {**read_card(folder), "onnx": card["onnx"]})
    with pytest.warns(RuntimeWarning, match="other weights"):
        clf = Classifier.from_name(folder)
    assert clf.backend == "torch"


def test_card_mismatch_and_failed_parity_are_refused(exported, tmp_path):
    folder = copy_model(exported["efficientnet_lite0"], tmp_path / "mismatch")
    card = read_card(folder)
    with pytest.raises(OnnxUnavailable, match="does not match its card"):
        load_onnx(folder, {**card, "classes": ["a", "b", "c"]})
    for bad in ({"labels_identical": False}, {"max_abs_diff": 0.05}):
        failed = {**card, "onnx": {**card["onnx"], "parity": {**card["onnx"]["parity"],
                                                             **bad, "passed": False}}}
        with pytest.raises(OnnxUnavailable, match="failed its parity check"):
            load_onnx(folder, failed)
    # the runtime applies the current bound (runtime.parity_max_diff), not the export's
    loose = {**card, "onnx": {**card["onnx"], "parity": {**card["onnx"]["parity"],
                                                        "max_abs_diff": 5e-4, "passed": True}}}
    assert load_onnx(folder, loose, parity_max_diff=1e-3) is not None
    with pytest.raises(OnnxUnavailable, match="failed its parity check"):
        load_onnx(folder, loose, parity_max_diff=1e-4)


def test_missing_onnx_uses_pytorch_quietly(exported, tmp_path, recwarn):
    folder = copy_model(exported["efficientnet_lite0"], tmp_path / "plain")
    (folder / ONNX_FILE).unlink()
    clf = Classifier.from_name(folder)
    assert clf.backend == "torch" and "not found" in clf.fallback_reason
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_backend_switch(exported, monkeypatch):
    folder = exported["efficientnet_lite0"]
    monkeypatch.setenv("LUNGCT_BACKEND", "torch")
    assert Classifier.from_name(folder).backend == "torch"
    assert Classifier.from_name(folder, backend="onnx").backend == "onnx"  # argument wins
    monkeypatch.setenv("LUNGCT_BACKEND", "onnx")
    assert Classifier.from_name(folder).backend == "onnx"
    monkeypatch.setenv("LUNGCT_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="LUNGCT_BACKEND"):
        Classifier.from_name(folder)
    monkeypatch.delenv("LUNGCT_BACKEND")
    cfg = {"runtime": {"backend": "torch", "threads": 1, "max_batch": 2}}
    assert runtime_settings(cfg) == ("torch", 1, 2, 1e-3, "float32")
    assert Classifier.from_name(folder, cfg=cfg).backend == "torch"
    assert runtime_settings({}).backend == "auto"


def test_max_batch_chunks_give_the_same_logits(exported):
    clf = Classifier.from_name(exported["hybrid_vit_lite0"], backend="onnx", threads=1)
    x = np.random.default_rng(0).standard_normal((7, 3, 64, 64)).astype(np.float32)
    whole = clf.logits(x)
    clf.onnx_model.max_batch = 3
    assert np.allclose(clf.logits(x), whole, atol=1e-5)


def test_old_constructor_and_prediction_dict_stay_compatible(exported):
    model = load_model(exported["efficientnet_lite0"])
    clf = Classifier(model, 0.6)
    assert clf.model is model and clf.backend == "torch"
    assert clf.tensor(np.zeros((80, 80), np.float32)).shape == (3, 64, 64)
    probs = clf.probabilities(torch.stack([clf.tensor(np.ones((70, 70), np.float32))]))
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-5
    pred = clf.predict_bytes(SAMPLES[0].read_bytes(), name=SAMPLES[0].name)
    d = pred.as_dict()
    assert set(d) >= {"label", "probabilities", "model", "unsure", "backend"}
    assert d["backend"] == "torch" and pred.confidence == d["probabilities"][d["label"]]
    assert Prediction("normal", {"normal": 1.0}, "m", False, {"x": 1}).as_dict()["x"] == 1
    json.dumps(d)


def test_parity_check_flags_a_real_deviation(exported):
    """An "export" 0.02 off in one logit fails; the real export passes the strict 1e-4."""
    folder = exported["efficientnet_lite0"]
    torch_clf = Classifier(load_model(folder))

    class Shifted:
        temperature = torch_clf.temperature

        def logits(self, x):
            return torch_clf.logits(x) + np.array([0.0, 2e-2, 0.0], np.float32)

    result = parity_check(torch_clf, Shifted(), SAMPLES)
    assert result["labels_identical"] and not result["within_tolerance"]
    assert result["max_abs_diff"] > result["max_diff_allowed"]
    assert result["torch_noise_floor"] < result["max_abs_diff"] / 10
    assert result["passed"] is False
    ok = parity_check(torch_clf, Classifier.from_name(folder, backend="onnx"), SAMPLES)
    assert ok["passed"] and ok["within_tolerance"] and "torch_noise_floor" not in ok


def test_the_one_thread_session_gives_the_same_answers(exported):
    """``predict_beside`` (a lone slice's forward pass next to its guard) runs the same
    network on a one-thread session: the same probabilities."""
    from lungct.preprocess import load_image

    clf = Classifier.from_name(exported["efficientnet_lite0"], backend="onnx", threads=2)
    x = np.stack([clf.prepare(load_image(p)) for p in SAMPLES])
    a, b = clf.predict_prepared(x), clf.predict_beside(x)
    assert clf.onnx_model.beside().threads == 1 and clf.onnx_model.beside() is not clf.onnx_model
    assert [p.label for p in a] == [p.label for p in b]
    for p, q in zip(a, b):
        assert q.probabilities == pytest.approx(p.probabilities, abs=1e-5)
