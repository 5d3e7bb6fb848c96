"""Stage 7, verdict: the case's label under one stated rule, and the order of suspicion.

Slices and the case follow one function, ``lungct.slice_label``; only classified
slices vote. ``suspicion`` (P(malignant) weighed by the slice's top finding)
orders the slices for review; it does not change the verdict.
"""

from __future__ import annotations

import numpy as np

from lungct import CLASSES, MALIGNANT_THRESHOLD, slice_label
from lungct.pipeline.slices import STATUSES, SliceResult

CASE_RULE = (f"malignant if any slice has P(malignant) >= {MALIGNANT_THRESHOLD:.2f}; "
             "otherwise benign if any slice is labelled benign; otherwise normal. A slice "
             f"is labelled malignant only from P(malignant) >= {MALIGNANT_THRESHOLD:.2f}, "
             "otherwise by its likeliest class, a likeliest malignant below that threshold "
             "being labelled benign")
"""The case verdict's rule in words; slices and case follow one function, ``slice_label``."""
REFUSED_RULE = "refused: no slice could be classified (see each slice's reason)"

def counts(results: list[SliceResult]) -> dict[str, int]:
    """How many slices ended in each state (``STATUSES``)."""
    out = dict.fromkeys(STATUSES, 0)
    for r in results:
        out[r.status] += 1
    return out


def suspicion(r: SliceResult) -> float:
    """How suspicious a classified slice is: P(malignant) times its top candidate's findings
    score when the findings stage ran, else P(malignant).

    Measured by ``python -m lungct lab findings --verdict``: the product ranks tumour
    slices above the others better than P(malignant) alone, on Lung-PET-CT-Dx (AUC 0.677
    against 0.454) and on IQ-OTH/NCCD's grouped test part (malignant vs other 0.940
    against 0.924); it orders the slices, the verdict keeps its stated rule.
    """
    p = r.malignant_probability
    return p * r.finding_score if r.finding_score is not None else p


def most_suspicious_first(results: list[SliceResult]) -> list[SliceResult]:
    """Classified slices by descending ``suspicion``, then the others in case order."""
    good = sorted((r for r in results if r.ok), key=lambda r: -suspicion(r))
    return good + [r for r in results if not r.ok]


def case_label(probabilities, threshold: float = MALIGNANT_THRESHOLD) -> str:
    """``CASE_RULE`` on an (n_slices, classes) array of probabilities in ``CLASSES`` order:
    the one rule, for the app, the CLI and cross-validation's case accuracy. Each slice is
    labelled by ``slice_label``; the case takes the gravest label among them."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(CLASSES))
    return _gravest([slice_label(row, threshold) for row in p])


def _gravest(labels: list[str]) -> str:
    return next((c for c in ("malignant", "benign") if c in labels), "normal")


def case_verdict(results: list[SliceResult],
                 threshold: float = MALIGNANT_THRESHOLD) -> dict | None:
    """The case-level label under ``CASE_RULE``; None when no slice could be classified.

    Returns {"label", "rule", "deciding_slice" (title), "deciding_position",
    "n_slices", "n_failed", "counts", "unsure"}; the case is unsure when any
    slice is unsure or a slice's likeliest class is malignant below the threshold.
    The verdict is the gravest slice label under ``slice_label``, so it always agrees
    with the labels shown per slice.
    """
    good = [r for r in results if r.ok]
    if not good:
        return None
    probs = [[r.prediction.probabilities.get(c, 0.0) for c in CLASSES] for r in good]
    labels = [slice_label(row, threshold) for row in probs]
    label = _gravest(labels)
    deciding = max(good, key=lambda r: r.malignant_probability)
    if label == "benign":
        benign = [r for r, k in zip(good, labels) if k == "benign"]
        deciding = max(benign, key=lambda r: r.prediction.probabilities["benign"]
                       + r.malignant_probability)
    likeliest = [CLASSES[int(np.argmax(row))] for row in probs]
    unsure = any(r.prediction.unsure for r in good) or any(
        top == "malignant" and k != "malignant" for top, k in zip(likeliest, labels))
    rule = CASE_RULE if threshold == MALIGNANT_THRESHOLD else CASE_RULE.replace(
        f"{MALIGNANT_THRESHOLD:.2f}", f"{threshold:.2f}")
    return {"label": label, "rule": rule, "deciding_slice": deciding.title,
            "deciding_position": deciding.position, "n_slices": len(good),
            "n_failed": len(results) - len(good), "counts": counts(results), "unsure": unsure}
