"""Tests for lungct.training.metrics against values worked out by hand."""

import json
import math

import numpy as np
import pytest

from lungct import CLASSES
from lungct.training import metrics as M

# Hand case: 6 slices, 2 per class; true -> predicted
#   normal:    0->0 ok, 0->1 wrong
#   benign:    1->1 ok, 1->1 ok
#   malignant: 2->2 ok, 2->0 wrong (a missed malignant)
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def one_hotish(y_pred, high=0.8):
    """Probabilities whose argmax is y_pred (high on it, the rest split evenly)."""
    p = np.full((len(y_pred), 3), (1 - high) / 2)
    p[np.arange(len(y_pred)), y_pred] = high
    return p


def test_accuracy_hand():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_confusion_hand():
    cm = M.confusion(Y_TRUE, Y_PRED)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.dtype.kind == "i"


def test_confusion_keeps_absent_classes():
    assert M.confusion([0, 0], [0, 0]).shape == (3, 3)


def test_per_class_prf_hand():
    prf = M.per_class_prf(Y_TRUE, Y_PRED)
    assert list(prf) == list(CLASSES)
    # normal: predicted at idx 0 (tp), 5 (fp) -> P 1/2; true at 0 (hit), 1 (miss) -> R 1/2
    expected = {
        "normal": (0.5, 0.5, 0.5),
        # benign: predicted at 1 (fp), 2, 3 (tp) -> P 2/3; R 2/2; F1 = 2*(2/3)*1/(5/3) = 0.8
        "benign": (2 / 3, 1.0, 0.8),
        # malignant: predicted only at 4 (tp) -> P 1; R 1/2; F1 = 2*0.5/1.5 = 2/3
        "malignant": (1.0, 0.5, 2 / 3),
    }
    for name, (p, r, f) in expected.items():
        assert prf[name]["precision"] == pytest.approx(p)
        assert prf[name]["recall"] == pytest.approx(r)
        assert prf[name]["f1"] == pytest.approx(f)
        assert prf[name]["support"] == 2


def test_per_class_prf_zero_division_is_zero():
    prf = M.per_class_prf([0, 1, 2], [0, 0, 0])  # benign/malignant never predicted
    assert prf["benign"]["precision"] == 0.0
    assert prf["malignant"]["f1"] == 0.0


def test_malignant_recall():
    assert M.malignant_recall(Y_TRUE, Y_PRED) == pytest.approx(0.5)
    assert math.isnan(M.malignant_recall([0, 1], [0, 1]))


def test_auc_perfect_and_reversed():
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = one_hotish(y)
    auc = M.roc_auc_ovr(y, perfect)
    assert all(auc[c] == pytest.approx(1.0) for c in CLASSES)
    assert auc["macro"] == pytest.approx(1.0)
    # true class always gets 0, the others 0.5: every positive ranks below every negative
    reversed_ = np.full((6, 3), 0.5)
    reversed_[np.arange(6), y] = 0.0
    auc = M.roc_auc_ovr(y, reversed_)
    assert all(auc[c] == pytest.approx(0.0) for c in CLASSES)
    assert auc["macro"] == pytest.approx(0.0)


def test_auc_none_for_absent_class():
    y = np.array([0, 0, 1, 1])  # no malignant
    auc = M.roc_auc_ovr(y, one_hotish(y))
    assert auc["malignant"] is None
    assert auc["normal"] == pytest.approx(1.0)
    assert auc["macro"] == pytest.approx(1.0)  # mean of the two defined ones


# ECE hand case, two bins (0, .5] and (.5, 1]:
#   conf .90 pred 0 true 0 ok    -> high bin
#   conf .80 pred 0 true 1 wrong -> high bin: acc .5, conf .85, |diff| .35, weight 2/4
#   conf .40 pred 0 true 0 ok    -> low bin
#   conf .45 pred 1 true 2 wrong -> low bin:  acc .5, conf .425, |diff| .075, weight 2/4
#   ECE = .5 * .35 + .5 * .075 = .2125
ECE_Y = [0, 1, 0, 2]
ECE_P = [[0.90, 0.05, 0.05], [0.80, 0.10, 0.10], [0.40, 0.35, 0.25], [0.20, 0.45, 0.35]]


def test_ece_hand():
    assert M.expected_calibration_error(ECE_Y, ECE_P, n_bins=2) == pytest.approx(0.2125)


def test_ece_zero_when_certain_and_right():
    y = np.array([0, 1, 2])
    assert M.expected_calibration_error(y, np.eye(3)[y]) == pytest.approx(0.0)


def test_ece_bins_are_right_closed():
    # conf exactly .5 goes to (0, .5], not (.5, 1]:
    #   separate bins: .5 * |1 - .5| + .5 * |0 - .9| = .7
    #   (a shared bin would give |1 - (.5 + .9)| / 2 = .2)
    p = [[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]]
    assert M.expected_calibration_error([0, 1], p, n_bins=2) == pytest.approx(0.7)


def test_reliability_curve_hand():
    rc = M.reliability_curve(ECE_Y, ECE_P, n_bins=2)
    assert rc["centers"].tolist() == pytest.approx([0.25, 0.75])
    assert rc["count"].tolist() == [2, 2]
    assert rc["accuracy"].tolist() == pytest.approx([0.5, 0.5])
    assert rc["confidence"].tolist() == pytest.approx([0.425, 0.85])
    rc = M.reliability_curve(ECE_Y, ECE_P, n_bins=4)
    assert rc["count"].tolist() == [0, 2, 0, 2]
    assert np.isnan(rc["accuracy"][0]) and np.isnan(rc["confidence"][2])


def test_bootstrap_contains_point_estimate():
    y_true = np.tile(Y_TRUE, 10)
    y_pred = np.tile(Y_PRED, 10)
    lo, hi = M.bootstrap_ci(y_true, y_pred, M.accuracy, n_boot=300)
    assert lo <= 4 / 6 <= hi
    assert lo < hi
    assert M.bootstrap_ci(y_true, y_pred, M.accuracy, n_boot=300) == (lo, hi)  # seeded


def test_bootstrap_degenerate_when_perfect():
    y = np.tile([0, 1, 2], 5)
    assert M.bootstrap_ci(y, y, M.accuracy, n_boot=200) == (1.0, 1.0)


def test_bootstrap_skips_undefined():
    # one malignant in 20: many resamples draw none (nan) and must be skipped, not scored 0
    y = np.array([0] * 19 + [2])
    lo, hi = M.bootstrap_ci(y, y, M.malignant_recall, n_boot=200)
    assert (lo, hi) == (1.0, 1.0)


def test_report_hand_and_json():
    probs = one_hotish(Y_PRED)
    rep = M.classification_report(Y_TRUE, probs, n_boot=200)
    text = json.dumps(rep, allow_nan=False)  # strict JSON: no nan, no numpy types
    assert json.loads(text) == rep
    assert rep["n"] == 6
    assert rep["accuracy"] == pytest.approx(4 / 6)
    lo, hi = rep["accuracy_ci95"]
    assert lo <= rep["accuracy"] <= hi
    assert rep["malignant_recall"] == pytest.approx(0.5)
    assert rep["malignant_false_negatives"] == 1
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert set(rep["roc_auc"]) == {*CLASSES, "macro"}
    # every prediction has confidence .8, accuracy 4/6 -> ECE = |4/6 - .8|
    assert rep["ece"] == pytest.approx(0.8 - 4 / 6)


def test_report_without_malignant_is_json_safe():
    y = [0, 1, 0, 1]
    rep = M.classification_report(y, one_hotish(y), n_boot=50)
    assert rep["malignant_recall"] is None
    assert rep["malignant_recall_ci95"] == [None, None]
    assert rep["roc_auc"]["malignant"] is None
    json.dumps(rep, allow_nan=False)


def test_format_report():
    rep = M.classification_report(Y_TRUE, one_hotish(Y_PRED), n_boot=50)
    text = M.format_report(rep, title="test split")
    assert text.startswith("test split")
    for needle in ("accuracy", "0.667", "ECE", "confusion matrix", "macro AUC", *CLASSES):
        assert needle in text


def test_value_errors():
    with pytest.raises(ValueError, match="length"):
        M.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="rows"):
        M.roc_auc_ovr([0, 1], one_hotish([0, 1, 2]))
    with pytest.raises(ValueError, match="sum to 1"):
        M.expected_calibration_error([0, 1], [[0.5, 0.2, 0.1], [0.3, 0.3, 0.4]])
    with pytest.raises(ValueError, match="columns"):
        M.classification_report([0, 1], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="outside"):
        M.confusion([0, 3], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        M.accuracy([0.5, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([], [])
    with pytest.raises(ValueError):
        M.bootstrap_ci([0, 1], [0], M.accuracy)


# ------------------------------------------------------- screening operating point

def _onehot_probs(p_mal):
    p_mal = np.asarray(p_mal, dtype=float)
    rest = (1 - p_mal) / 2
    return np.stack([rest, rest, p_mal], 1)


def test_operating_point_threshold_reaches_the_target_on_val():
    from lungct.training.metrics import sensitivity_operating_point
    # 10 malignant val slices with P(mal) 0.1..1.0, 4 others with low P(mal)
    val_p = list(np.linspace(0.1, 1.0, 10)) + [0.05, 0.2, 0.35, 0.6]
    val_y = [2] * 10 + [0, 1, 0, 1]
    test_p = [0.95, 0.5, 0.25, 0.15, 0.32, 0.01]
    test_y = [2, 2, 2, 2, 0, 1]
    op = sensitivity_operating_point(val_y, _onehot_probs(val_p), test_y, _onehot_probs(test_p),
                                     target_recall=0.8, n_boot=50)
    # 80% of 10 -> the 8th highest malignant probability, 0.3
    assert op["threshold"] == pytest.approx(0.3)
    assert op["val"]["recall"] == pytest.approx(0.8) and op["val"]["missed"] == 2
    assert op["val"]["flagged_negatives"] == 2          # 0.35 and 0.6
    assert op["test"]["recall"] == pytest.approx(0.5) and op["test"]["missed"] == 2
    assert op["test"]["flagged_negatives"] == 1 and op["test"]["false_alarm_rate"] == 0.5
    assert op["test"]["missed_below_0.05"] == 0          # the misses had 0.25 and 0.15
    low, high = op["test"]["recall_ci95"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_operating_point_full_recall_takes_the_lowest_malignant_probability():
    from lungct.training.metrics import sensitivity_operating_point
    op = sensitivity_operating_point([2, 2, 0], _onehot_probs([0.9, 0.4, 0.1]), [2, 0],
                                     _onehot_probs([0.4, 0.5]), target_recall=1.0, n_boot=10)
    assert op["threshold"] == pytest.approx(0.4)
    assert op["test"]["recall"] == 1.0 and op["test"]["false_alarm_rate"] == 1.0
    assert op["test"]["missed_below_0.05"] == 0


@pytest.mark.parametrize("target", [0.0, 1.5, -0.1])
def test_operating_point_rejects_bad_targets(target):
    from lungct.training.metrics import sensitivity_operating_point
    with pytest.raises(ValueError, match="target_recall"):
        sensitivity_operating_point([2], _onehot_probs([0.5]), [2], _onehot_probs([0.5]),
                                    target_recall=target)


def test_operating_point_needs_malignant_validation_slices():
    from lungct.training.metrics import sensitivity_operating_point
    with pytest.raises(ValueError, match="no positive"):
        sensitivity_operating_point([0, 1], _onehot_probs([0.5, 0.2]), [2],
                                    _onehot_probs([0.5]))


def test_format_operating_point_mentions_recall_and_false_alarms():
    from lungct.training.metrics import format_operating_point, sensitivity_operating_point
    op = sensitivity_operating_point([2, 2, 0], _onehot_probs([0.9, 0.4, 0.1]), [2, 0],
                                     _onehot_probs([0.4, 0.5]), target_recall=1.0, n_boot=10)
    line = format_operating_point(op)
    assert "test malignant recall 1.000" in line and "1 other slices flagged" in line
    assert "0 missed (0 with P < 0.05)" in line


@pytest.mark.parametrize("a,b,expected", [(11, 7, 0.4807), (22, 6, 0.0037), (0, 0, 1.0),
                                          (5, 5, 1.0), (10, 0, 0.00195)])
def test_mcnemar_exact_matches_the_binomial_test(a, b, expected):
    from lungct.lab.results_table import mcnemar_exact
    assert mcnemar_exact(a, b) == pytest.approx(expected, abs=5e-4)
    assert mcnemar_exact(a, b) == mcnemar_exact(b, a)
