"""Unit tests of the app's logic (lungct.app_support), without Streamlit."""

from __future__ import annotations

import io
import json
from html import escape as html_escape

import numpy as np
import pandas as pd
import pytest
from conftest import PHI_STRINGS, FakeGuard, make_dicom

from lungct import CLASSES
from lungct.app_support import catalog, charts, comparison, experiments
from lungct.pipeline import ClassifierBase
from lungct.app_support.case import (CASE_RULE, SliceResult, analyse_files,
                                     case_csv, case_table, case_verdict, check_extension,
                                     most_suspicious_first)
from lungct.app_support.reference import DISCLAIMER, PAPER_RESULTS
from lungct.app_support.report import build_report, png_bytes
from lungct.inference import Prediction
from lungct.preprocess import InvalidImageError


def pred(normal: float, benign: float, malignant: float, unsure_below: float = 0.6):
    probs = dict(zip(CLASSES, (normal, benign, malignant)))
    label = max(probs, key=probs.get)
    return Prediction(label, probs, "fake", probs[label] < unsure_below)


def result(position: int, *probs, total: int = 3) -> SliceResult:
    return SliceResult(position, total, ".png", gray=np.zeros((32, 32), np.float32),
                       prediction=pred(*probs))


class FakeClassifier(ClassifierBase):
    """Labels by mean brightness; enough to exercise the upload path quickly."""

    unsure_below = 0.6

    def prepare(self, gray, seg=None):
        return np.float32(np.clip(gray.mean(), 0, 1))

    def predict_prepared(self, arrays):
        return [pred(1 - float(m), float(m) / 2, float(m) / 2) for m in arrays]


# ------------------------------------------------------------------ case rule


@pytest.mark.parametrize("slices, expected", [
    ([(0.9, 0.05, 0.05), (0.2, 0.2, 0.6)], "malignant"),       # any P(malignant) >= 0.5
    ([(0.3, 0.2, 0.5), (0.9, 0.05, 0.05)], "malignant"),       # threshold is inclusive
    ([(0.9, 0.05, 0.05), (0.2, 0.7, 0.1)], "benign"),          # else any benign label
    ([(0.35, 0.2, 0.45), (0.9, 0.05, 0.05)], "benign"),        # malignant label below 0.5
    ([(0.9, 0.05, 0.05), (0.7, 0.2, 0.1)], "normal"),
])
def test_case_verdict_rule(slices, expected):
    verdict = case_verdict([result(i, *p, total=len(slices)) for i, p in enumerate(slices, 1)])
    assert verdict["label"] == expected
    assert verdict["rule"] == CASE_RULE
    assert verdict["n_slices"] == len(slices)


def test_case_verdict_flags_unsure_and_ignores_errors():
    results = [result(1, 0.35, 0.2, 0.45, total=2), SliceResult(2, 2, ".png", error="empty file")]
    verdict = case_verdict(results)
    assert verdict["unsure"] and verdict["n_failed"] == 1
    assert verdict["deciding_slice"] == "File 1 of 2 (.png)"
    assert case_verdict([SliceResult(1, 1, ".png", error="bad")]) is None


def test_most_suspicious_first_and_table():
    results = [result(1, 0.8, 0.1, 0.1), SliceResult(2, 4, ".bmp", error="broken"),
               result(3, 0.1, 0.1, 0.8), result(4, 0.3, 0.4, 0.3)]
    order = [r.position for r in most_suspicious_first(results)]
    assert order == [3, 4, 1, 2]
    table = case_table(results)
    assert list(table["p_malignant"][:3]) == [0.8, 0.3, 0.1]
    assert table["status"].iloc[-1] == "error: broken"
    assert table["rank"].iloc[0] == 1


def test_case_csv_round_trip():
    results = [result(1, 0.8, 0.1, 0.1), result(2, 0.1, 0.1, 0.8)]
    table = pd.read_csv(io.BytesIO(case_csv(results, "student_kd")))
    assert list(table.columns) == ["rank", "file", "label", "unsure", "p_normal", "p_benign",
                                   "p_malignant", "suspicion", "status", "model"]
    assert table["file"].tolist() == ["File 2 of 3 (.png)", "File 1 of 3 (.png)"]
    assert set(table["model"]) == {"student_kd"}


# ------------------------------------------------------------------ uploads


def test_check_extension():
    assert check_extension("a.JPG") == ".jpg"
    assert check_extension("IM000123") == ""
    assert check_extension("slice.dcm") == ".dcm"
    with pytest.raises(InvalidImageError) as err:
        check_extension("Doe_Jane.secretext")
    assert "secretext" not in str(err.value)
    r = analyse_files(FakeClassifier(), [("scan.Doe^Jane", b"data")])[0]
    assert r.title == "File 1 of 1 (unsupported extension)" and "Doe" not in r.error


def test_display_table_formats_cis():
    table = pd.DataFrame([{"model": "m", "kind": "ours", "accuracy": 0.9, "accuracy_lo": 0.85,
                           "accuracy_hi": 0.95, "n_test": 219, "params_m": 3.4}])
    for c in comparison.SUMMARY_COLUMNS:
        table[c] = table.get(c, float("nan"))
    table[list(comparison.TEXT_COLUMNS)] = table[list(comparison.TEXT_COLUMNS)].fillna("")
    shown = comparison.display_table(table)
    assert shown.loc[0, "accuracy [95% CI]"] == "0.900 [0.850, 0.950]"
    assert shown.loc[0, "malignant recall [95% CI]"] == ""
    assert shown.loc[0, "test n"] == "219" and shown.loc[0, "params (M)"] == "3.40"


def test_bad_file_gets_error_others_processed(sample_bytes):
    files = [("notes.txt", b"hello"), ("a.png", b"\x89PNG\r\n\x1a\nbroken"),
             ("b.jpg", sample_bytes["normal_1.jpg"]), ("empty.png", b"")]
    results = analyse_files(FakeClassifier(), files)
    assert [r.ok for r in results] == [False, False, True, False]
    assert "unsupported file type" in results[0].error
    assert "empty" in results[3].error
    assert all("notes" not in (r.error or "") for r in results)


def test_unexpected_exception_is_contained(sample_bytes):
    class Broken(FakeClassifier):
        def predict_prepared(self, arrays):
            raise RuntimeError("CUDA exploded at /secret/path")

    r = analyse_files(Broken(), [("x.jpg", sample_bytes["normal_1.jpg"])])[0]
    assert not r.ok and "RuntimeError" in r.error and "/secret/path" not in r.error


def test_non_ct_dicom_gets_warning():
    r = analyse_files(FakeClassifier(), [("IM0001", make_dicom(modality="MR"))])[0]
    assert r.ok and r.is_dicom and "MR" in r.warning
    assert r.title == "File 1 of 1 (DICOM, no extension)"


def test_no_phi_in_csv_and_html(phi_dicom, sample_bytes):
    files = [("Doe^Jane_PID-12345.dcm", phi_dicom), ("Doe_Jane.jpg", sample_bytes["benign_1.jpg"]),
             ("PID-12345", phi_dicom)]
    results = analyse_files(FakeClassifier(), files, window="file")
    assert all(r.ok for r in results), [r.error for r in results]
    assert results[0].is_dicom and results[2].is_dicom
    overlays = {r.position: np.zeros((*r.gray.shape, 3), np.uint8) for r in results}
    html = build_report(results, "student_kd", "lungct test", overlays, "Grad-CAM")
    csv = case_csv(results, "student_kd").decode()
    table = case_table(results).to_string()
    for text in (html, csv, table):
        for secret in PHI_STRINGS:
            assert secret not in text
    assert "File 1 of 3 (.dcm)" in csv and "File 3 of 3 (DICOM, no extension)" in csv


def test_png_has_no_metadata():
    data = png_bytes(np.random.default_rng(0).random((600, 700)).astype(np.float32))
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    assert img.size == (512, 439) and not img.text


def test_guard_rejects_before_classification(sample_bytes):
    import io as _io

    from PIL import Image
    black = _io.BytesIO()
    Image.new("L", (64, 64), 0).save(black, format="PNG")
    files = [("a.jpg", sample_bytes["normal_1.jpg"]), ("b.png", black.getvalue()),
             ("IM1", make_dicom(modality="MR")), ("c.txt", b"nope")]
    guard = FakeGuard()
    results = analyse_files(FakeClassifier(), files, guard=guard)
    assert guard.calls == 1                                   # one batch for the pixels
    assert results[0].ok
    assert results[1].rejected and results[1].prediction is None
    assert results[1].gray is not None                        # shown, not classified
    assert results[2].rejected and "modality MR" in results[2].error
    assert not results[3].rejected and "unsupported" in results[3].error
    table = case_table(results)
    assert table["status"].str.startswith("not a lung CT slice").sum() == 2
    assert case_verdict(results)["n_slices"] == 1
    assert "Not classified: not a lung CT slice" in build_report(results, "m", "v")

    alone = analyse_files(FakeClassifier(), [("b.png", black.getvalue())], guard=FakeGuard())[0]
    assert alone.rejected and alone.error.startswith("not a lung CT")
    assert analyse_files(FakeClassifier(), [("a.jpg", sample_bytes["normal_1.jpg"])],
                         guard=FakeGuard())[0].ok
    assert analyse_files(FakeClassifier(), [("b.png", black.getvalue())])[0].ok   # no guard


def test_guard_failure_shows_no_class(sample_bytes):
    """Fail closed: if the input check itself breaks, no class is shown."""
    results = analyse_files(FakeClassifier(), [("a.jpg", sample_bytes["benign_1.jpg"])],
                            guard=FakeGuard(fail=True))
    assert not results[0].ok and results[0].rejected
    assert "input check" in results[0].error and results[0].prediction is None


# ------------------------------------------------------------------ report


def test_report_is_self_contained(sample_bytes):
    results = analyse_files(FakeClassifier(), [("a.jpg", sample_bytes["malignant_1.jpg"]),
                                               ("b.txt", b"nope")])
    overlay = np.zeros((*results[0].gray.shape, 3), np.uint8)
    html = build_report(results, "student_kd", "weights sha256 abc", {1: overlay}, "EigenCAM")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("data:image/png;base64,") == 2
    assert "http://" not in html.replace("https://doi.org", "") and "<script" not in html
    assert html_escape(DISCLAIMER) in html and "student_kd" in html and "weights sha256 abc" in html
    assert "Not classified" in html and "Case verdict" in html


def test_report_escapes_text():
    r = SliceResult(1, 1, ".png", error="<img src=x onerror=alert(1)>")
    html = build_report([r], "<b>model</b>", "v")
    assert "<img src=x" not in html and "&lt;b&gt;model" in html


# ------------------------------------------------------------------ catalog / comparison


def _entry(tmp_path, name, card, weights=False, predictions=None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(card))
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    if predictions is not None:
        (folder / "test_predictions.json").write_text(json.dumps(predictions))
    return folder


def _metrics(acc):
    from lungct.training.metrics import classification_report
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    probs = np.eye(3)[y] * 0.7 + 0.1
    if acc < 1:
        probs[0] = [0.1, 0.1, 0.8]
    return classification_report(y, probs, n_boot=50)


def test_catalog_and_comparison_table(tmp_path):
    _entry(tmp_path, "a_grouped", {"arch": "efficientnet_lite0", "protocol": "grouped",
                                   "test_metrics": _metrics(0.9),
                                   "stats": {"params": 3_400_000, "flops": 8e8},
                                   "teacher": {"name": "t"}}, weights=True)
    _entry(tmp_path, "b_old", {"arch": "vgg16"})                        # older card: no metrics
    _entry(tmp_path, "c_paper", {"arch": "x", "protocol": "paper", "test_metrics": _metrics(1)})
    (tmp_path / "d_broken").mkdir()
    (tmp_path / "d_broken" / "card.json").write_text("{half")
    entries = catalog.list_entries(tmp_path)
    assert [e.name for e in entries] == ["a_grouped", "b_old", "c_paper"]
    assert [e.name for e in catalog.runnable(entries)] == ["a_grouped"]
    assert catalog.default_model(entries, "student_kd") == "a_grouped"

    leakage = {"grouped": {"pixel_1nn_accuracy": 0.63, "share_test_with_twin": 0.0},
               "paper": {"pixel_1nn_accuracy": 0.98, "share_test_with_twin": 0.42}}
    grouped = comparison.comparison_table(entries, "grouped", leakage)
    ours = grouped[grouped["kind"] == "ours"].set_index("model")
    assert list(ours.index) == ["a_grouped", "b_old"]
    assert ours.loc["a_grouped", "accuracy"] == pytest.approx(0.9)
    assert ours.loc["a_grouped", "params_m"] == pytest.approx(3.4)
    assert ours.loc["a_grouped", "teacher"] == "t"
    assert catalog.NOT_EVALUATED in ours.loc["b_old", "status"]
    assert np.isnan(ours.loc["b_old", "accuracy"])
    probe = grouped[grouped["model"].str.contains("leakage")]
    assert probe["accuracy"].tolist() == [0.63]
    assert len(grouped[grouped["kind"].str.startswith("published")]) == len(PAPER_RESULTS)
    paper = comparison.comparison_table(entries, "paper", leakage)
    assert "c_paper" in paper["model"].tolist() and "a_grouped" not in paper["model"].tolist()
    assert 0.98 in paper["accuracy"].tolist()
    assert comparison.comparison_table(entries, "grouped", {}).shape[0] == 2 + len(PAPER_RESULTS)
    charts.headline_bars(grouped)


def test_paper_reference_figures():
    by_model = {r["model"]: r for r in PAPER_RESULTS}
    assert by_model["paper: VGG16 (transfer)"]["accuracy"] == pytest.approx(0.9714)
    assert by_model["paper: ViT teacher"]["malignant_recall"] == pytest.approx(0.98)
    assert by_model["paper: VGG16 distilled student"]["malignant_f1"] == pytest.approx(0.98)


def test_test_predictions_curves_and_cis(tmp_path):
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    probs = np.full((10, 3), 0.1) + np.eye(3)[y] * 0.7
    rows = [{"path": str(i), "label": CLASSES[k], "probs": p.tolist()}
            for i, (k, p) in enumerate(zip(y, probs))]
    folder = _entry(tmp_path, "m", {"test_metrics": _metrics(1)},
                    predictions={"protocol": "grouped", "classes": list(CLASSES), "rows": rows})
    preds = catalog.test_predictions(folder)
    assert preds["y_true"].tolist() == y.tolist() and preds["probs"].shape == (10, 3)
    assert catalog.test_predictions(tmp_path) is None
    (folder / "test_predictions.json").write_text("{}")
    assert catalog.test_predictions(folder) is None

    cis = comparison.per_class_ci(y, y, n_boot=200)
    assert cis[2]["recall"] == (1.0, 1.0) and cis[0]["f1"] == (1.0, 1.0)
    noisy = y.copy()
    noisy[:2] = 2
    lo, hi = comparison.per_class_ci(y, noisy, n_boot=300)[0]["recall"]
    assert 0 <= lo <= 1 / 3 <= hi <= 1
    roc = comparison.roc_points(y, probs, 2)
    assert roc["auc"] == pytest.approx(1.0)
    assert comparison.roc_points(np.zeros(5, int), np.full((5, 3), 1 / 3), 0)["auc"] is None
    entry = catalog.ModelEntry("m", folder, {"test_metrics": _metrics(1)})
    long = comparison.per_class_table(entry, {"y_true": y, "probs": probs,
                                              "classes": list(CLASSES)}, n_boot=100)
    assert len(long) == 9 and long["lo"].notna().all()
    assert comparison.per_class_table(entry, None)["lo"].isna().all()
    assert comparison.confusion_matrix(entry).shape == (3, 3)
    charts.per_class_bars(long)
    charts.roc_figure({"m": roc}, "malignant")
    charts.reliability_figure({"m": comparison.reliability({"y_true": y, "probs": probs})})
    charts.confusion_heatmap(comparison.confusion_matrix(entry))
    charts.probability_bar(pred(0.2, 0.3, 0.5).probabilities, 0.6)


def test_weights_digest_and_version(tmp_path):
    folder = _entry(tmp_path, "m", {"lungct_version": "0.1.0", "created": "2026"}, weights=True)
    entry = catalog.ModelEntry("m", folder, json.loads((folder / "card.json").read_text()))
    assert len(catalog.weights_digest(folder)) == 12
    assert entry.version().startswith("lungct 0.1.0, trained 2026, weights sha256 ")
    assert catalog.weights_digest(tmp_path) is None


def test_samples_listing():
    names = catalog.list_samples()
    assert {f"{c}_1.jpg" for c in CLASSES} <= set(names)
    with pytest.raises(ValueError):
        catalog.read_sample("../params.yaml")


# ------------------------------------------------------------------ experiments


def test_store_exists_never_creates(tmp_path):
    db = tmp_path / "none.db"
    assert not experiments.store_exists(f"sqlite:///{db}")
    assert not db.exists()
    assert not experiments.store_exists((tmp_path / "nope").as_uri())
    assert experiments.store_exists(tmp_path.as_uri())


def test_experiment_queries(mlflow_store):
    client = experiments.client(mlflow_store)
    runs = experiments.list_runs(client, "lungct")
    assert sorted(runs["model_name"]) == ["student_kd", "student_plain"]
    assert experiments.list_runs(client, "no-such-experiment").empty
    assert experiments.differing_params(runs) == ["param:train.lr"]
    table = experiments.compare_table(runs)
    assert "param:train.model" not in table and "metric:val_loss" in table
    assert "param:train.model" in experiments.compare_table(runs, all_params=True)
    assert experiments.curve_metrics(runs) == ["val_loss", "val_acc"]
    one = experiments.filter_runs(runs, ["student_kd"])
    history = experiments.metric_history(client, one, "val_loss")
    assert history["step"].tolist() == [1, 2, 3]
    charts.learning_curves(history, "val_loss")


def test_predict_waits_for_a_running_heatmap():
    """A classification must not run while another session's CAM hooks sit on the model."""
    import threading

    import torch

    from lungct.explain import model_lock
    from lungct.pipeline import classify

    class WithModel(FakeClassifier):
        backend, model = "torch", torch.nn.Linear(1, 1)

    clf, done = WithModel(), threading.Event()
    lock = model_lock(clf.model)
    one = SliceResult(1, 1, ".png", gray=np.ones((8, 8), np.float32))
    with lock:
        worker = threading.Thread(target=lambda: (classify(clf, [one]), done.set()))
        worker.start()
        assert not done.wait(0.3)
    worker.join(5)
    assert done.is_set()


def test_external_table_reads_external_and_pointing_from_cards(tmp_path):
    pointing = {"methods": {"EigenCAM": {"pointing_game": 0.5, "energy_in_box": 0.2}}}
    external = {"src": {"dataset": "src", "lung_slices_accepted": 0.9,
                        "boxed_slices_called_malignant": 0.25, "series_called_malignant": 1,
                        "series": {"a": {}, "b": {}}}}
    entries = [catalog.ModelEntry("both", tmp_path, {"view": "lungs", "external": external,
                                                     "pointing_game": pointing}),
               catalog.ModelEntry("pointing_only", tmp_path, {"pointing_game": pointing}),
               catalog.ModelEntry("lesion_only", tmp_path, {"lesion_sensitivity": {
                   "n": 84, "auc_painted_vs_plain": 0.65,
                   "called_malignant": {"plain": 0.024, "painted": 0.036}}}),
               catalog.ModelEntry("neither", tmp_path, {})]
    table = comparison.external_table(entries)
    assert list(table["model"]) == ["both", "pointing_only", "lesion_only"]
    lesion = table.iloc[2]
    assert lesion["normal slices called malignant"] == pytest.approx(0.024)
    assert lesion["the same with a painted mass"] == pytest.approx(0.036)
    assert lesion["AUC painted vs plain"] == pytest.approx(0.65)
    both = table.iloc[0]
    assert both["view"] == "lungs" and both["series called malignant"] == "1/2"
    assert both["tumour-box slices called malignant"] == 0.25
    assert both["EigenCAM"] == "50% / 20%" and both["Grad-CAM"] == ""
    assert table.iloc[1]["dataset"] == "" and table.iloc[1]["view"] == "full"
    assert comparison.external_table([]).empty


def test_rendering_table_reads_the_robustness_figures(tmp_path):
    r = {"protocol": "grouped", "plain": {"accuracy": 0.8, "normal_called_malignant": 0.02},
         "kinds": {"lung_window_imitation": {"accuracy": 0.57, "normal_called_malignant": 0.82}}}
    entries = [catalog.ModelEntry("a", tmp_path, {"rendering_robustness": r}),
               catalog.ModelEntry("b", tmp_path, {})]
    table = comparison.rendering_table(entries)
    assert list(table["model"]) == ["a"]
    row = table.iloc[0]
    assert row["lung window: normal called malignant"] == 0.82
    assert row["plain: accuracy"] == 0.8 and row["view"] == "full"
    assert row["screenshot: accuracy"] is None or np.isnan(row["screenshot: accuracy"])
    assert comparison.rendering_table([]).empty
