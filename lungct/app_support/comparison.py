"""Tables and curves for comparing models, built from cards and test predictions.

Everything degrades gracefully: an older card without ``test_metrics`` gives a
row marked "not evaluated"; a model without ``test_predictions.json`` has no
per-class CIs, ROC or reliability curve, but keeps its card figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lungct import CLASSES
from lungct.app_support.catalog import NOT_EVALUATED, ModelEntry
from lungct.app_support.reference import PAPER_RESULTS
from lungct.training.metrics import reliability_curve

PROTOCOLS = {"grouped": "grouped (pseudo-patient split, no near-twins across parts)",
             "paper": "paper (image-level split, as published: leaks near-duplicate slices)"}


SUMMARY_COLUMNS = [
    "model", "kind", "protocol", "arch", "teacher", "status", "n_test", "accuracy",
    "accuracy_lo", "accuracy_hi", "malignant_recall", "malignant_recall_lo",
    "malignant_recall_hi", "malignant_precision", "malignant_f1", "malignant_missed",
    "auc_macro", "auc_malignant", "ece", "temperature", "params_m", "gflops", "weights_mb",
    "cpu_latency_ms"]
TEXT_COLUMNS = ("model", "kind", "protocol", "arch", "teacher", "status")


def _get(d: dict | None, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _ci(values) -> tuple[float, float]:
    if isinstance(values, (list, tuple)) and len(values) == 2 and None not in values:
        return float(values[0]), float(values[1])
    return float("nan"), float("nan")


def summary_row(entry: ModelEntry) -> dict:
    """One model's headline figures (NaN where the card lacks them)."""
    m = entry.test_metrics or {}
    stats = entry.card.get("stats") or {}
    acc_lo, acc_hi = _ci(m.get("accuracy_ci95"))
    rec_lo, rec_hi = _ci(m.get("malignant_recall_ci95"))
    teacher = entry.card.get("teacher")
    nan = float("nan")

    def num(x):
        return float(x) if isinstance(x, (int, float)) else nan

    return {
        "model": entry.name, "kind": "ours", "protocol": entry.protocol,
        "arch": entry.card.get("arch", ""),
        "teacher": teacher.get("name") if isinstance(teacher, dict) else "",
        "status": ("evaluated" if m else NOT_EVALUATED) + ("" if entry.has_weights
                                                          else "; card only, no weights"),
        "n_test": m.get("n"),
        "accuracy": num(m.get("accuracy")), "accuracy_lo": acc_lo, "accuracy_hi": acc_hi,
        "malignant_recall": num(m.get("malignant_recall")),
        "malignant_recall_lo": rec_lo, "malignant_recall_hi": rec_hi,
        "malignant_precision": num(_get(m, "per_class", "malignant", "precision")),
        "malignant_f1": num(_get(m, "per_class", "malignant", "f1")),
        "malignant_missed": m.get("malignant_false_negatives"),
        "auc_macro": num(_get(m, "roc_auc", "macro")),
        "auc_malignant": num(_get(m, "roc_auc", "malignant")),
        "ece": num(m.get("ece")),
        "temperature": num(_get(entry.card, "calibration", "temperature")),
        "params_m": num(stats.get("params")) / 1e6,
        "gflops": num(stats.get("flops")) / 1e9,
        "weights_mb": num(stats.get("weights_mb")),
        "cpu_latency_ms": num(stats.get("cpu_latency_ms")),
    }


POINTING_METHODS = ("Grad-CAM", "Grad-CAM++", "EigenCAM", "LayerCAM")


def external_table(entries: list[ModelEntry]) -> pd.DataFrame:
    """Per model, what its card says about another source's chest CT (``python -m lungct
    external``), the pointing game on its tumour boxes (``python -m lungct lab pointing``):
    hit rate / share of heatmap energy inside the boxes, per heatmap method, and whether
    a mass painted into its normal test slices moves it (``python -m lungct lab lesion-check``)."""
    rows = []
    for e in entries:
        ext = next(iter((e.card.get("external") or {}).values()), None)
        pointing = _get(e.card, "pointing_game", "methods") or {}
        lesion = e.card.get("lesion_sensitivity") or {}
        if not ext and not pointing and not lesion.get("n"):
            continue
        row = {"model": e.name, "view": e.card.get("view", "full")}
        if lesion.get("n"):   # python -m lungct lab lesion-check: does a painted mass move it?
            row.update({
                "normal slices called malignant": _get(lesion, "called_malignant", "plain"),
                "the same with a painted mass": _get(lesion, "called_malignant", "painted"),
                "AUC painted vs plain": lesion.get("auc_painted_vs_plain")})
        if isinstance(ext, dict):
            n_series = len(ext.get("series") or {})
            row.update({
                "dataset": ext.get("dataset", ""),
                "lung slices accepted": ext.get("lung_slices_accepted"),
                "tumour-box slices called malignant": ext.get("boxed_slices_called_malignant"),
                "other lung slices called malignant": ext.get("other_slices_called_malignant"),
                "AUC tumour-box vs other slices": ext.get("auc_boxed_vs_other"),
                "series called malignant": (f"{ext.get('series_called_malignant')}/{n_series}"
                                            if n_series else "")})
        for method in POINTING_METHODS:
            m = pointing.get(method)
            row[method] = (f"{m['pointing_game']:.0%} / {m['energy_in_box']:.0%}"
                           if isinstance(m, dict) else "")
        rows.append(row)
    table = pd.DataFrame(rows)
    for c in ("dataset", "series called malignant"):
        if c in table:
            table[c] = table[c].fillna("")
    return table


RENDERING_KINDS = ("lung_window_imitation", "mediastinal_window_imitation", "screenshot",
                   "gamma")
"""The other renderings the comparison page shows (all of them are in the cards)."""


def rendering_table(entries: list[ModelEntry]) -> pd.DataFrame:
    """Per model, its test slices plain and as other hospitals render them (``python -m
    lungct lab robustness``): accuracy and the share of normal slices called malignant."""
    rows = []
    for e in entries:
        r = e.card.get("rendering_robustness")
        if not isinstance(r, dict) or not isinstance(r.get("plain"), dict):
            continue
        row = {"model": e.name, "view": e.card.get("view", "full"),
               "protocol": r.get("protocol", ""),
               "plain: accuracy": r["plain"].get("accuracy"),
               "plain: normal called malignant": r["plain"].get("normal_called_malignant")}
        for kind in RENDERING_KINDS:
            k = (r.get("kinds") or {}).get(kind) or {}
            label = kind.replace("_imitation", "").replace("_", " ")
            row[f"{label}: accuracy"] = k.get("accuracy")
            row[f"{label}: normal called malignant"] = k.get("normal_called_malignant")
        rows.append(row)
    return pd.DataFrame(rows)


def reference_rows(protocol: str, leakage: dict) -> list[dict]:
    """The paper's published figures and the pixel 1-NN leakage probe of ``protocol``."""
    rows = [{**r, "kind": "published (paper protocol)", "protocol": "paper",
             "status": "reported in the paper"} for r in PAPER_RESULTS]
    probe = leakage.get(protocol) if isinstance(leakage, dict) else None
    if isinstance(probe, dict) and probe.get("pixel_1nn_accuracy") is not None:
        share = probe.get("share_test_with_twin")
        rows.append({
            "model": "leakage probe: pixel 1-NN", "kind": "reference (no learning)",
            "protocol": protocol, "accuracy": float(probe["pixel_1nn_accuracy"]),
            "n_test": probe.get("n_test"),
            "status": ("copies the label of the most similar training image"
                       + (f"; {share:.0%} of test slices have a near-twin in training"
                          if isinstance(share, (int, float)) else ""))})
    return rows


def comparison_table(entries: list[ModelEntry], protocol: str, leakage: dict | None = None,
                     references: bool = True) -> pd.DataFrame:
    """Our models of ``protocol`` plus the reference rows, one row each."""
    rows = [summary_row(e) for e in entries if e.protocol == protocol]
    if references:
        rows += reference_rows(protocol, leakage or {})
    table = pd.DataFrame(rows)
    for c in SUMMARY_COLUMNS:
        if c not in table:
            table[c] = "" if c in TEXT_COLUMNS else np.nan
    for c in TEXT_COLUMNS:
        table[c] = table[c].fillna("")
    return table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]


def per_class_ci(y_true, y_pred, n_classes: int = len(CLASSES), n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> dict[int, dict[str, tuple]]:
    """Percentile bootstrap CIs of per-class precision, recall and F1 (vectorised).

    Resamples test slices with replacement; a resample where a metric is
    undefined (no such class drawn or predicted) is left out of that metric.
    """
    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, yt.size, size=(n_boot, yt.size))
    t, p = yt[idx], yp[idx]
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(n_classes):
            tp = np.sum((t == k) & (p == k), axis=1).astype(float)
            prec = tp / np.sum(p == k, axis=1)
            rec = tp / np.sum(t == k, axis=1)
            f1 = 2 * prec * rec / (prec + rec)
            f1 = np.where((prec + rec) == 0, 0.0, f1)
            f1 = np.where(np.isnan(prec) | np.isnan(rec), np.nan, f1)
            out[k] = {}
            for name, vals in (("precision", prec), ("recall", rec), ("f1", f1)):
                vals = vals[np.isfinite(vals)]
                out[k][name] = (tuple(float(v) for v in np.percentile(
                    vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])) if vals.size
                    else (float("nan"), float("nan")))
    return out


def per_class_table(entry: ModelEntry, predictions: dict | None, n_boot: int = 1000
                    ) -> pd.DataFrame:
    """Long table model/class/metric/value/lo/hi; CIs only with test predictions."""
    per_class = _get(entry.test_metrics, "per_class") or {}
    cis = None
    if predictions is not None:
        cis = per_class_ci(predictions["y_true"], predictions["probs"].argmax(1),
                           n_classes=len(predictions["classes"]), n_boot=n_boot)
    rows = []
    for k, c in enumerate(CLASSES):
        for metric in ("precision", "recall", "f1"):
            value = _get(per_class, c, metric)
            lo, hi = cis[k][metric] if cis else (float("nan"), float("nan"))
            rows.append({"model": entry.name, "class": c, "metric": metric,
                         "value": float(value) if value is not None else float("nan"),
                         "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def roc_points(y_true, probs, k: int) -> dict:
    """One-vs-rest ROC curve of class ``k``: fpr, tpr and AUC (None if undefined)."""
    from sklearn.metrics import roc_auc_score, roc_curve
    positive = np.asarray(y_true) == k
    if positive.all() or not positive.any():
        return {"fpr": np.array([]), "tpr": np.array([]), "auc": None}
    fpr, tpr, _ = roc_curve(positive, np.asarray(probs)[:, k])
    return {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(positive, np.asarray(probs)[:, k]))}


def reliability(predictions: dict, n_bins: int = 10) -> dict:
    """Reliability-diagram data of calibrated test probabilities."""
    return reliability_curve(predictions["y_true"], predictions["probs"], n_bins=n_bins)


def confusion_matrix(entry: ModelEntry) -> np.ndarray | None:
    """The card's test confusion matrix (rows true, columns predicted) or None."""
    m = _get(entry.test_metrics, "confusion_matrix")
    try:
        arr = np.asarray(m, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (len(CLASSES), len(CLASSES)) else None


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None or value != value else format(value, spec)


def _with_ci(value, lo, hi) -> str:
    text = _fmt(value)
    return f"{text} [{_fmt(lo)}, {_fmt(hi)}]" if text and lo == lo and hi == hi else text


DISPLAY_GROUPS = {
    "Test metrics": ["model", "test n", "accuracy [95% CI]", "malignant recall [95% CI]",
                     "malignant precision", "malignant F1", "AUC macro", "AUC malignant",
                     "ECE", "T"],
    "Models, size and speed": ["model", "kind", "arch", "teacher", "status", "params (M)",
                               "GFLOPs", "weights (MB)", "CPU latency (ms)"],
}
"""The display table in two parts, each narrow enough for a 1440 px wide window."""


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """``comparison_table`` as readable text: CIs in brackets, blanks for missing values."""
    out = pd.DataFrame({
        "model": table["model"], "kind": table["kind"], "arch": table["arch"],
        "teacher": table["teacher"], "status": table["status"],
        "test n": [("" if v is None or v != v else str(int(v))) for v in table["n_test"]],
        "accuracy [95% CI]": [_with_ci(*r) for r in zip(
            table["accuracy"], table["accuracy_lo"], table["accuracy_hi"])],
        "malignant recall [95% CI]": [_with_ci(*r) for r in zip(
            table["malignant_recall"], table["malignant_recall_lo"],
            table["malignant_recall_hi"])],
    })
    for col, title, spec in (("malignant_precision", "malignant precision", ".3f"),
                             ("malignant_f1", "malignant F1", ".3f"),
                             ("auc_macro", "AUC macro", ".3f"),
                             ("auc_malignant", "AUC malignant", ".3f"),
                             ("ece", "ECE", ".3f"), ("temperature", "T", ".2f"),
                             ("params_m", "params (M)", ".2f"), ("gflops", "GFLOPs", ".2f"),
                             ("weights_mb", "weights (MB)", ".1f"),
                             ("cpu_latency_ms", "CPU latency (ms)", ".0f")):
        out[title] = [_fmt(v, spec) for v in table[col]]
    return out
