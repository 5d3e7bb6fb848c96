"""Evaluation metrics for the three-class lung-CT classifier.

Plain functions on numpy arrays so that training, the DVC evaluate stage and
the app all score predictions the same way. Labels are integer indices into
``CLASSES`` and probability arrays have one column per class in that order.

Why more than accuracy: the classes are imbalanced and the costly mistake is a
malignant slice called normal or benign, so the report leads with malignant
recall and the count of malignant false negatives, gives bootstrap confidence
intervals (test sets are small, a point estimate alone overstates certainty),
and measures calibration (ECE) because the app shows the probabilities.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from lungct import CLASSES

MALIGNANT = CLASSES.index("malignant")
"""Index of the class whose misses matter most."""

ECE_BINS = 15
"""Bin count for the reported ECE (Guo et al. 2017 use 15)."""

_PROB_SUM_ATOL = 1e-3
"""Rows of probabilities may be this far from 1: float32 softmax is not exact."""


# --------------------------------------------------------------------------- validation


def _labels(y_true, n_classes: int, name: str = "y_true") -> np.ndarray:
    """1-D int labels in ``[0, n_classes)``; integer-valued floats are accepted
    because labels often come back from pandas or JSON as floats."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        whole = arr.dtype.kind in "fb" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        if not whole:
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_classes:
        raise ValueError(
            f"{name} has labels outside [0, {n_classes - 1}]: min {arr.min()}, max {arr.max()}"
        )
    return arr


def _probs(probs, n: int, n_classes: int | None = None) -> np.ndarray:
    """2-D float probabilities, one row per sample, each row a distribution.

    Rows must sum to 1 (within ``_PROB_SUM_ATOL``): logits or unnormalised
    scores passed by mistake would give meaningless ECE and confidences.
    """
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probs must be 2-D (n_samples, n_classes), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"probs has {arr.shape[0]} rows but y_true has {n} labels")
    if n_classes is not None and arr.shape[1] != n_classes:
        raise ValueError(f"probs has {arr.shape[1]} columns, expected {n_classes} (one per class)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("probs contains nan or inf")
    if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValueError("probs must lie in [0, 1]; pass softmax outputs, not logits")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_ATOL)
    if bad.size:
        raise ValueError(
            f"probs rows must sum to 1; {bad.size} do not (row {bad[0]} sums to {sums[bad[0]]:.4g})"
        )
    return arr


def _pair(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    yt = _labels(y_true, n_classes, "y_true")
    yp = _labels(y_pred, n_classes, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {yt.size} vs {yp.size}")
    return yt, yp


def _nan_to_none(x: float) -> float | None:
    """JSON has no nan; ``None`` (null) marks an undefined metric instead."""
    return None if x is None or not np.isfinite(x) else float(x)


# --------------------------------------------------------------------------- label metrics


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches; the overall number, but blind to which class
    the errors fall on, so it is never reported alone."""
    yt, yp = _pair(y_true, y_pred, len(CLASSES))
    return float(np.mean(yt == yp))


def confusion(y_true, y_pred, n_classes: int = len(CLASSES)) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class.

    ``labels=range(n_classes)`` keeps the matrix n_classes x n_classes even
    when a class is absent from a (small) split, so matrices always align.
    """
    yt, yp = _pair(y_true, y_pred, n_classes)
    return confusion_matrix(yt, yp, labels=list(range(n_classes))).astype(np.int64)


def per_class_prf(y_true, y_pred, classes: Sequence[str] = CLASSES) -> dict[str, dict]:
    """Precision, recall, F1 and support per class name.

    ``zero_division=0`` scores a never-predicted class as precision 0 rather
    than warning: a class the model never outputs should look bad, not missing.
    """
    yt, yp = _pair(y_true, y_pred, len(classes))
    p, r, f, s = precision_recall_fscore_support(
        yt, yp, labels=list(range(len(classes))), zero_division=0
    )
    return {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(classes)
    }


def _class_recall(yt: np.ndarray, yp: np.ndarray, k: int) -> float:
    mask = yt == k
    if not mask.any():
        return float("nan")
    return float(np.mean(yp[mask] == k))


def malignant_recall(y_true, y_pred) -> float:
    """Share of true malignant slices predicted malignant (sensitivity).

    The headline safety number; ``nan`` when the split holds no malignant case,
    since 0 would falsely claim every one was missed.
    """
    yt, yp = _pair(y_true, y_pred, len(CLASSES))
    return _class_recall(yt, yp, MALIGNANT)


# --------------------------------------------------------------------------- probability metrics


def roc_auc_ovr(y_true, probs, classes: Sequence[str] = CLASSES) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class plus ``"macro"`` (mean of the defined ones).

    Computed class by class instead of ``roc_auc_score(multi_class="ovr")``
    because that call raises as soon as one class is absent; here such a class
    gets ``None`` (AUC is undefined with one label value) and the rest survive.
    """
    yt = _labels(y_true, len(classes))
    pr = _probs(probs, yt.size, len(classes))
    out: dict[str, float | None] = {}
    for k, name in enumerate(classes):
        positive = yt == k
        if positive.all() or not positive.any():
            out[name] = None
        else:
            out[name] = float(roc_auc_score(positive, pr[:, k]))
    defined = [v for v in out.values() if v is not None]
    out["macro"] = float(np.mean(defined)) if defined else None
    return out


def _binned(y_true, probs, n_bins: int):
    """Top-label confidence, correctness and bin index per sample.

    Bins are equal-width on [0, 1] and right-closed, ``(lo, hi]``, as in Guo et
    al. (2017); a confidence of exactly 0 falls into the first bin.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    pr = np.asarray(probs)
    n_classes = pr.shape[1] if pr.ndim == 2 else len(CLASSES)
    yt = _labels(y_true, n_classes)
    pr = _probs(pr, yt.size)
    conf = pr.max(axis=1)
    correct = (pr.argmax(axis=1) == yt).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    return conf, correct, idx, edges


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: ``sum_b |B|/n * |acc(B) - conf(B)|`` over equal-width bins.

    It says how far the shown confidence is from the observed accuracy, which
    matters because the app displays the probabilities to a reader.
    """
    conf, correct, idx, _ = _binned(y_true, probs, n_bins)
    n = conf.size
    count = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    # |B|/n * |acc - conf| == |sum(correct) - sum(conf)| / n: no empty-bin division.
    return float(np.sum(np.abs(acc_sum - conf_sum)) / n)


def reliability_curve(y_true, probs, n_bins: int = ECE_BINS) -> dict:
    """Per-bin data for a reliability diagram.

    Returns numpy arrays ``edges`` (n_bins + 1), and ``centers``, ``accuracy``,
    ``confidence``, ``count`` (n_bins each). Empty bins have ``nan`` accuracy
    and confidence so plotting libraries leave a gap instead of a fake point.
    """
    conf, correct, idx, edges = _binned(y_true, probs, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / count, np.nan)
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
    return {
        "edges": edges,
        "centers": (edges[:-1] + edges[1:]) / 2,
        "accuracy": acc,
        "confidence": mean_conf,
        "count": count.astype(np.int64),
    }


# --------------------------------------------------------------------------- uncertainty


def rate(flags: Iterable[bool]) -> float | None:
    """Share of true flags, rounded to 4 places; None for no flags."""
    flags = list(flags)
    return round(float(np.mean(flags)), 4) if flags else None


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion k/n (sensible at 0/n and n/n)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def wilson_text(flags: Iterable[bool]) -> str:
    """"95% CI lo-hi%" of the share of true flags (Wilson), for log lines."""
    flags = list(flags)
    lo, hi = wilson(sum(flags), len(flags)) or (math.nan, math.nan)
    return f"95% CI {100 * lo:.1f}-{100 * hi:.1f}%"


def bootstrap_ci(
    y_true,
    y_pred_or_probs,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` resampling samples.

    Resamples indices with replacement (the same indices for both arrays, so
    pairs stay together). Resamples where the statistic is undefined (nan or
    None, e.g. no malignant case drawn) are skipped rather than counted as 0,
    which would drag the interval down. Seeded so reports are reproducible.
    Returns ``(nan, nan)`` if no resample gives a defined value.
    """
    yt = np.asarray(y_true)
    other = np.asarray(y_pred_or_probs)
    if yt.ndim != 1 or yt.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {yt.shape}")
    if other.shape[0] != yt.size:
        raise ValueError(f"y_true has {yt.size} samples but the second array has {other.shape[0]}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = yt.size
    stats = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, n, size=n)
        value = statistic(yt[idx], other[idx])
        if value is not None and np.isfinite(value):
            stats.append(float(value))
    if not stats:
        return float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def sensitivity_operating_point(val_y, val_probs, test_y, test_probs,
                                target_recall: float = 0.98,
                                positive: int = CLASSES.index("malignant"),
                                n_boot: int = 1000, seed: int = 0) -> dict:
    """A screening threshold on P(malignant), chosen on validation, applied to test.

    Argmax labels trade malignant recall for benign/normal accuracy. A reader
    who cannot afford a missed cancer wants a flag "possibly malignant" at a
    recall they choose: the threshold is the highest one that reaches
    ``target_recall`` on the *validation* malignant slices, and the test split
    only reports what that threshold then does (recall with a bootstrap CI,
    missed slices, and the share of non-malignant slices flagged).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    vy = _labels(val_y, len(CLASSES), "val_y")
    vp = _probs(val_probs, vy.size, len(CLASSES))[:, positive]
    ty = _labels(test_y, len(CLASSES), "test_y")
    tp = _probs(test_probs, ty.size, len(CLASSES))[:, positive]
    pos = np.sort(vp[vy == positive])[::-1]
    if pos.size == 0:
        raise ValueError("the validation split has no positive (malignant) slice")
    k = int(np.ceil(target_recall * pos.size))          # positives that must be flagged
    threshold = float(pos[k - 1])

    def rates(y, p):
        flagged = p >= threshold
        is_pos = y == positive
        return {"n_positive": int(is_pos.sum()),
                "recall": _nan_to_none(float(flagged[is_pos].mean()) if is_pos.any() else float("nan")),
                "missed": int((is_pos & ~flagged).sum()),
                "flagged_negatives": int((~is_pos & flagged).sum()),
                "false_alarm_rate": _nan_to_none(float(flagged[~is_pos].mean())
                                                 if (~is_pos).any() else float("nan"))}

    test = rates(ty, tp)
    # misses no threshold could catch without flagging nearly everything
    test["missed_below_0.05"] = int(((ty == positive) & (tp < 0.05)).sum())
    low, high = bootstrap_ci(
        ty, tp, lambda y, p: (float((p[y == positive] >= threshold).mean())
                              if (y == positive).any() else float("nan")),
        n_boot=n_boot, seed=seed)
    test["recall_ci95"] = [_nan_to_none(low), _nan_to_none(high)]
    return {"class": CLASSES[positive], "target_val_recall": target_recall,
            "threshold": round(threshold, 6), "val": rates(vy, vp), "test": test}


# --------------------------------------------------------------------------- report


def classification_report(
    y_true, probs, classes: Sequence[str] = CLASSES, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Everything the evaluate stage records, as a JSON-serialisable dict.

    Only plain floats, ints, lists and ``None`` (for undefined values, since
    strict JSON has no nan), so it can go straight to ``json.dump``, DVC
    metrics and MLflow. Predictions are ``argmax(probs)``.
    """
    classes = tuple(classes)
    yt = _labels(y_true, len(classes))
    pr = _probs(probs, yt.size, len(classes))
    yp = pr.argmax(axis=1)
    malignant = classes.index("malignant") if "malignant" in classes else None

    acc = float(np.mean(yt == yp))
    acc_ci = bootstrap_ci(yt, yp, lambda a, b: float(np.mean(a == b)), n_boot=n_boot, seed=seed)
    report = {
        "classes": list(classes),
        "n": int(yt.size),
        "accuracy": acc,
        "accuracy_ci95": [_nan_to_none(v) for v in acc_ci],
        "malignant_recall": None,
        "malignant_recall_ci95": [None, None],
        "malignant_false_negatives": 0,
        "per_class": per_class_prf(yt, yp, classes),
        "confusion_matrix": confusion(yt, yp, len(classes)).tolist(),
        "roc_auc": roc_auc_ovr(yt, pr, classes),
        "ece": expected_calibration_error(yt, pr, n_bins=ECE_BINS),
        "ece_bins": ECE_BINS,
    }
    if malignant is not None:
        report["malignant_recall"] = _nan_to_none(_class_recall(yt, yp, malignant))
        ci = bootstrap_ci(
            yt, yp, lambda a, b: _class_recall(a, b, malignant), n_boot=n_boot, seed=seed
        )
        report["malignant_recall_ci95"] = [_nan_to_none(v) for v in ci]
        report["malignant_false_negatives"] = int(np.sum((yt == malignant) & (yp != malignant)))
    return report


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_report(report: dict, title: str = "") -> str:
    """Render :func:`classification_report` output as text for logs and the CLI."""
    classes = report.get("classes", list(CLASSES))
    lines = []
    if title:
        lines += [title, "=" * len(title)]
    lo, hi = report["accuracy_ci95"]
    lines.append(f"n = {report['n']}")
    lines.append(f"accuracy          {_fmt(report['accuracy'])}  (95% CI {_fmt(lo)} - {_fmt(hi)})")
    lo, hi = report["malignant_recall_ci95"]
    lines.append(
        f"malignant recall  {_fmt(report['malignant_recall'])}  (95% CI {_fmt(lo)} - {_fmt(hi)})"
    )
    lines.append(f"malignant missed  {report['malignant_false_negatives']}")
    lines.append(f"ECE ({report.get('ece_bins', ECE_BINS)} bins){'':<5}{_fmt(report['ece'])}")
    lines.append("")

    width = max(len(c) for c in classes) + 2
    header = f"{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}{'AUC':>8}"
    lines.append(f"{'class':<{width}}{header}")
    for name in classes:
        m = report["per_class"][name]
        auc = report["roc_auc"].get(name)
        lines.append(
            f"{name:<{width}}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}"
            f"{m['support']:>9d}{_fmt(auc):>8}"
        )
    lines.append(f"{'macro AUC':<{width}}{_fmt(report['roc_auc'].get('macro')):>47}")
    lines.append("")

    lines.append("confusion matrix (rows = true, columns = predicted)")
    cell = max(width, max(len(str(v)) for row in report["confusion_matrix"] for v in row) + 2)
    lines.append(" " * width + "".join(f"{c:>{cell}}" for c in classes))
    for name, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


def format_operating_point(op: dict) -> str:
    """One line for :func:`sensitivity_operating_point` output."""
    t, v = op["test"], op["val"]
    ci = t.get("recall_ci95") or [None, None]
    return (f"screening flag P({op['class']}) >= {op['threshold']:.4f} (chosen for "
            f"{op['target_val_recall']:.0%} recall on val, where it flags "
            f"{_fmt(v['false_alarm_rate'], '.1%')} of other slices): test {op['class']} recall "
            f"{_fmt(t['recall'], '.3f')} (95% CI {_fmt(ci[0], '.3f')} - {_fmt(ci[1], '.3f')}), "
            f"{t['missed']} missed ({t.get('missed_below_0.05', 'n/a')} with P < 0.05), "
            f"{t['flagged_negatives']} other slices flagged "
            f"({_fmt(t['false_alarm_rate'], '.1%')})")
