"""Grouped cross-validation (lungct.lab.cv): folds never split a patient, every image is
predicted once, intervals resample patients, calibration is cross-fitted."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from lungct import CLASSES
from lungct.pipeline import case_label
from lungct.lab.cv import (assign_folds, cross_fitted_probabilities, cv_report, fit_temperature,
                       fold_manifest, fold_part, format_cv, group_bootstrap_ci, softmax)


def _rows(n_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = CLASSES[g % 3]
        for i in range(int(rng.integers(2, 15))):
            rows.append({"path": f"{label}/{g}_{i}.jpg", "label": label, "group": f"g{g:03d}",
                         "grouped_split": "train"})
    return rows


def test_folds_keep_patients_whole_and_balance_labels():
    rows = _rows()
    folds = assign_folds(rows, k=5, seed=0)
    assert set(folds.values()) == set(range(5))
    assert set(folds) == {r["group"] for r in rows}
    per_fold = Counter((folds[r["group"]], r["label"]) for r in rows)
    for label in CLASSES:
        counts = [per_fold[(f, label)] for f in range(5)]
        assert max(counts) - min(counts) <= 14   # at most one group's size apart
    assert assign_folds(rows, 5, 0) == folds                   # seeded
    assert assign_folds(rows, 5, 1) != folds


def test_every_run_has_disjoint_train_val_test_and_each_group_is_tested_once():
    rows = _rows()
    folds = assign_folds(rows, k=5)
    tested = Counter()
    for f in range(5):
        parts = {g: fold_part(folds[g], f, 5) for g in folds}
        assert set(parts.values()) == {"train", "val", "test"}
        tested.update(g for g, p in parts.items() if p == "test")
    assert set(tested.values()) == {1}


def test_fold_manifest_rewrites_only_the_split_column(tmp_path):
    rows = _rows(12)
    folds = assign_folds(rows, k=3)
    path = fold_manifest(rows, folds, 0, 3, tmp_path / "f0.csv")
    with path.open(encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert [r["path"] for r in back] == [r["path"] for r in rows]
    assert {r["grouped_split"] for r in back} == {"train", "val", "test"}


def test_too_few_groups_or_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(_rows(), k=1)
    with pytest.raises(ValueError, match="cannot fill"):
        assign_folds(_rows(3), k=5)


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(3000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    assert fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.15)


def test_cross_fitted_calibration_uses_other_folds_only():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(600, 3))
    y = logits.argmax(1)
    fold_ids = np.arange(600) % 3
    probs, temps = cross_fitted_probabilities(logits, y, fold_ids)
    assert len(temps) == 3
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    # the argmax never changes under a temperature
    assert np.array_equal(probs.argmax(1), logits.argmax(1))


def test_group_bootstrap_resamples_whole_groups():
    groups = np.array(["a"] * 10 + ["b"] * 10)
    values = np.array([1.0] * 10 + [0.0] * 10)
    lo, hi = group_bootstrap_ci(groups, lambda i: float(values[i].mean()), n_boot=200)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)   # only 0, 0.5 or 1 possible


def test_case_label_follows_the_case_rule():
    mal, ben, nor = (CLASSES.index(c) for c in ("malignant", "benign", "normal"))

    def row(k, p=0.9):
        r = np.full(3, (1 - p) / 2)
        r[k] = p
        return r
    assert case_label([row(nor), row(mal, 0.6)]) == "malignant"
    assert case_label([row(nor), row(ben)]) == "benign"
    assert case_label([row(nor), row(nor)]) == "normal"
    assert case_label([row(mal, 0.45)]) == "benign"   # malignant below the threshold


def test_cv_report_on_perfect_and_random_predictions():
    rows = _rows(30)
    folds = assign_folds(rows, k=3)
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    fold_ids = np.array([folds[g] for g in groups])
    perfect = np.eye(3)[y] * 6.0
    rep = cv_report(y, perfect, groups, fold_ids, n_boot=50)
    assert rep["accuracy"] == pytest.approx(1.0)
    assert rep["case_accuracy"] == pytest.approx(1.0)
    assert rep["malignant_auc"] == pytest.approx(1.0)
    assert rep["n_groups"] == 30 and rep["folds"] == 3
    noise = np.random.default_rng(0).normal(size=perfect.shape)
    rep = cv_report(y, noise, groups, fold_ids, n_boot=50)
    assert rep["accuracy"] < 0.6
    lo, hi = rep["accuracy_ci95"]
    assert lo <= rep["accuracy"] <= hi
    assert "grouped CV" in format_cv(rep)


def test_paired_difference_counts_discordant_images():
    from lungct.lab.cv import paired_difference
    y = np.array([0, 1, 2, 0, 1, 2])
    a = np.array([0, 1, 2, 0, 0, 0])      # 4 right
    b = np.array([0, 0, 0, 0, 1, 2])      # 4 right, others
    groups = np.array(["p", "p", "q", "q", "r", "r"])
    out = paired_difference(y, a, b, groups, n_boot=200)
    assert out["difference"] == pytest.approx(0.0)
    assert out["only_a_right"] == 2 and out["only_b_right"] == 2
    lo, hi = out["difference_ci95"]
    assert lo <= 0.0 <= hi
