"""K-fold cross-validation grouped by pseudo-patient: every image is predicted once,
by a model that never saw its patient.

Why: the grouped test split holds 32 pseudo-patients (about 4 benign), so one
split cannot tell two recipes apart and its intervals are wide. Five grouped
folds predict all 1097 images from 114 pseudo-patients out of fold; the
intervals here resample **patients** (a cluster bootstrap), because slices of
one patient are not independent. The calibration temperature is fitted on
out-of-fold logits, cross-fitted (fold f is scaled by a temperature fitted on
the other folds) so its ECE is measured on data it did not see; the
temperature to ship is the one fitted on all folds.

Folds are assigned to whole pseudo-patients, stratified by their label and
balanced by image count; for fold f the test part is fold f, early stopping
and model selection use fold f+1 (mod k), training the rest (60/20/20).
Training code is unchanged: each fold is a manifest whose ``grouped_split``
column says train/val/test (``fold_manifest``).

>>> folds = assign_folds(rows, k=5, seed=0)               # doctest: +SKIP
>>> report = cv_report(labels, logits, groups, fold_ids)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lungct import CLASSES
from lungct.pipeline import CASE_RULE, case_label
from lungct.training.evaluate import fit_temperature
from lungct.training.metrics import expected_calibration_error, roc_auc_ovr
from lungct.onnx_runtime import calibrated_softmax

MALIGNANT, BENIGN = CLASSES.index("malignant"), CLASSES.index("benign")


# ------------------------------------------------------------------ folds

def group_labels(rows: Sequence[dict]) -> dict[str, str]:
    """Each pseudo-patient's label: the most common label of its slices (labels are per
    patient in IQ-OTH/NCCD; a group that joined near-twins of two classes takes the majority)."""
    by_group: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_group[r["group"]][r["label"]] += 1
    return {g: c.most_common(1)[0][0] for g, c in by_group.items()}


def assign_folds(rows: Sequence[dict], k: int = 5, seed: int = 0) -> dict[str, int]:
    """{group: fold}: whole pseudo-patients per fold, stratified by label, image counts balanced.

    Within each label, groups are shuffled (seeded) and then placed largest
    first into the fold that holds the fewest images of that label so far.
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    sizes = Counter(r["group"] for r in rows)
    labels = group_labels(rows)
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} groups cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    for label in sorted(set(labels.values())):
        groups = sorted(g for g in labels if labels[g] == label)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        groups.sort(key=lambda g: -sizes[g])          # stable: ties keep the shuffled order
        load = [0] * k
        for g in groups:
            f = int(np.argmin(load))
            folds[g] = f
            load[f] += sizes[g]
    return folds


def fold_part(fold_of_group: int, fold: int, k: int) -> str:
    """train / val / test of a group whose fold is ``fold_of_group``, in run ``fold``."""
    if fold_of_group == fold:
        return "test"
    return "val" if fold_of_group == (fold + 1) % k else "train"


def fold_manifest(rows: Sequence[dict], folds: dict[str, int], fold: int, k: int,
                  path: str | Path) -> Path:
    """A manifest for run ``fold``: ``grouped_split`` says train/val/test by fold."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "grouped_split": fold_part(folds[r["group"]], fold, k)})
    return path


# ------------------------------------------------------------ calibration

softmax = calibrated_softmax
"""softmax(logits / T), the runtime's own definition of a calibrated probability."""


def cross_fitted_probabilities(logits: np.ndarray, y: np.ndarray,
                               fold_ids: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Probabilities where fold f is scaled by the temperature fitted on the other folds."""
    probs = np.zeros_like(logits, dtype=np.float64)
    temps = []
    for f in sorted(set(fold_ids.tolist())):
        inside = fold_ids == f
        t = fit_temperature(logits[~inside], y[~inside])
        temps.append(t)
        probs[inside] = softmax(logits[inside], t)
    return probs, temps


# ----------------------------------------------------------------- report

def group_bootstrap_ci(groups: np.ndarray, statistic: Callable[[np.ndarray], float],
                       n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> list[float | None]:
    """Percentile interval of ``statistic(indices)`` resampling whole groups with replacement."""
    uniq = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.choice(uniq, size=len(uniq))])
        v = statistic(idx)
        if v is not None and np.isfinite(v):
            stats.append(float(v))
    if not stats:
        return [None, None]
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def _recall(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    mask = y == k
    return float(np.mean(pred[mask] == k)) if mask.any() else float("nan")


def _auc(y: np.ndarray, probs: np.ndarray) -> float:
    value = roc_auc_ovr(y, probs, CLASSES).get("malignant")
    return float("nan") if value is None else float(value)


def case_accuracy(y: np.ndarray, probs: np.ndarray, groups: np.ndarray,
                  idx: np.ndarray | None = None) -> float:
    """Share of pseudo-patients whose case label (``CASE_RULE`` over their slices) is right."""
    idx = np.arange(len(y)) if idx is None else idx
    right = []
    for g in np.unique(groups[idx]):
        member = idx[groups[idx] == g]
        truth = CLASSES[Counter(y[member].tolist()).most_common(1)[0][0]]
        right.append(case_label(probs[member]) == truth)
    return float(np.mean(right))


def cv_report(y: Sequence[int], logits: np.ndarray, groups: Sequence[str],
              fold_ids: Sequence[int], n_boot: int = 1000, seed: int = 0) -> dict:
    """Out-of-fold metrics with patient-level bootstrap intervals, case accuracy and
    cross-fitted calibration (see the module docstring)."""
    y = np.asarray(y, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    groups = np.asarray(groups)
    fold_ids = np.asarray(fold_ids, dtype=int)
    raw = softmax(logits)
    probs, temps = cross_fitted_probabilities(logits, y, fold_ids)
    pred = probs.argmax(1)   # temperature scaling never changes the argmax

    stats = {
        "accuracy": lambda i: float(np.mean(pred[i] == y[i])),
        "malignant_recall": lambda i: _recall(y[i], pred[i], MALIGNANT),
        "benign_recall": lambda i: _recall(y[i], pred[i], BENIGN),
        "malignant_auc": lambda i: _auc(y[i], probs[i]),
        "case_accuracy": lambda i: case_accuracy(y, probs, groups, i),
    }
    everything = np.arange(len(y))
    out: dict = {"n_images": int(len(y)), "n_groups": int(len(np.unique(groups))),
                 "folds": int(len(np.unique(fold_ids))), "case_rule": CASE_RULE,
                 "interval": f"95% percentile bootstrap over pseudo-patients ({n_boot} draws)"}
    for name, fn in stats.items():
        out[name] = fn(everything)
        out[f"{name}_ci95"] = group_bootstrap_ci(groups, fn, n_boot, seed)
    out["per_fold_accuracy"] = [float(np.mean(pred[fold_ids == f] == y[fold_ids == f]))
                                for f in sorted(set(fold_ids.tolist()))]
    out["calibration"] = {
        "ece_uncalibrated": expected_calibration_error(y, raw),
        "ece_cross_fitted": expected_calibration_error(y, probs),
        "fold_temperatures": [round(t, 4) for t in temps],
        "temperature_all_folds": round(fit_temperature(logits, y), 4),
        "ece_goal": 0.03,
    }
    return out


def paired_difference(y: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int],
                      groups: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy of A minus accuracy of B on the same out-of-fold images, with a patient
    bootstrap interval: two recipes compared where one split could not tell them apart."""
    y, a, b, groups = (np.asarray(v) for v in (y, pred_a, pred_b, groups))
    right_a, right_b = a == y, b == y

    def diff(i: np.ndarray) -> float:
        return float(np.mean(right_a[i]) - np.mean(right_b[i]))
    return {"accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()),
            "difference": diff(np.arange(len(y))),
            "difference_ci95": group_bootstrap_ci(groups, diff, n_boot, seed),
            "only_a_right": int(np.sum(right_a & ~right_b)),
            "only_b_right": int(np.sum(right_b & ~right_a))}


def format_cv(report: dict, title: str = "") -> str:
    """A short plain-text table of ``cv_report``."""
    def ci(name: str, pct: bool = True) -> str:
        v, (lo, hi) = report[name], report[f"{name}_ci95"]
        if pct:
            return f"{v:.1%} ({lo:.1%}-{hi:.1%})" if lo is not None else f"{v:.1%}"
        return f"{v:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{v:.3f}"

    cal = report["calibration"]
    lines = [title] if title else []
    lines += [
        f"{report['folds']}-fold grouped CV: {report['n_images']} images, "
        f"{report['n_groups']} pseudo-patients, each predicted once out of fold",
        f"  accuracy          {ci('accuracy')}",
        f"  malignant recall  {ci('malignant_recall')}",
        f"  benign recall     {ci('benign_recall')}",
        f"  malignant AUC     {ci('malignant_auc', pct=False)}",
        f"  case accuracy     {ci('case_accuracy')}  (per pseudo-patient: {report['case_rule']})",
        f"  per fold accuracy {', '.join(f'{a:.1%}' for a in report['per_fold_accuracy'])}",
        f"  ECE {cal['ece_uncalibrated']:.3f} uncalibrated, {cal['ece_cross_fitted']:.3f} with "
        f"cross-fitted temperatures {cal['fold_temperatures']} (goal {cal['ece_goal']}); "
        f"T on all folds {cal['temperature_all_folds']}",
        f"  intervals: {report['interval']}",
    ]
    return "\n".join(lines)
