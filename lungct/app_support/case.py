"""The clinical pages' view of a case: upload handling, the case table and its CSV, and how
a probability reads on screen (``percent``, ``probabilities_text``).

The pipeline itself (decode, segment, guard, classify, findings, verdict) is
``lungct.pipeline``; every page runs it through ``analyse_files``.
Privacy: on exports a file is referred to only by its position in the upload
and its extension ("file 3 of 7 (.dcm)"); no DICOM tag is read, and nothing
built from ``SliceResult.as_dict`` or ``title`` (table, CSV, report) carries a
name. Example slices shipped with the repository keep their names: they are public.
"""

from __future__ import annotations

import io
import math
import os

import pandas as pd

from lungct import CLASSES, MALIGNANT_THRESHOLD
from lungct.pipeline import (ACCEPTED_EXTENSIONS, ACCEPTED_HELP, CASE_RULE, SliceResult,
                             analyse_slices, case_verdict, most_suspicious_first, suspicion)
from lungct.pipeline.series import read_slice
from lungct.preprocess import WINDOWS, InvalidImageError

WINDOW_CHOICES = (*WINDOWS, "file")
WINDOW_HELP = ("Applied to DICOM files before the model: lung (W1500/L-600), mediastinal "
               "(W350/L50) or the file's own window.")

MISSING = "—"
"""What a table cell shows where there is no value (never "None" or "nan")."""

__all__ = ["ACCEPTED_HELP", "CASE_RULE", "MALIGNANT_THRESHOLD", "MISSING", "SliceResult",
           "WINDOW_CHOICES", "WINDOW_HELP", "analyse_files", "below_threshold_note", "case_csv",
           "case_table", "case_verdict", "check_extension", "file_extension",
           "most_suspicious_first", "percent", "probabilities_text"]


def percent(p: float | None) -> str:
    """0.93 -> '93%'; None -> ``MISSING``. Whole percents rounded down, so that a slice
    below the malignant threshold (0.497) never reads as 50%.

    >>> percent(0.497), percent(0.5), percent(0.93)
    ('49%', '50%', '93%')
    """
    if p is None:
        return MISSING
    return f"{math.floor(float(p) * 100 + 1e-9):d}%"


def below_threshold_note(prediction, threshold: float = MALIGNANT_THRESHOLD) -> str | None:
    """Why a slice whose likeliest class is malignant is not labelled malignant, else None."""
    p = prediction.probabilities
    if not p or max(p, key=p.get) != "malignant" or prediction.label == "malignant":
        return None
    return (f"Likeliest class malignant, but P(malignant) {percent(p['malignant'])} is below "
            f"the {percent(threshold)} threshold: labelled {prediction.label}, unsure.")


def probabilities_text(probabilities: dict | None) -> str:
    """{'malignant': 0.93, ...} -> 'malignant 93% · benign 5% · normal 2%' (highest first)."""
    if not probabilities:
        return MISSING
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{label} {percent(p)}" for label, p in ranked)


def file_extension(name: str) -> str:
    """Lower-case extension of an upload's name, "" when it has none."""
    return os.path.splitext(os.path.basename(name or ""))[1].lower()


def check_extension(name: str) -> str:
    """The accepted extension of ``name`` ("" for none); InvalidImageError otherwise.

    The unknown extension is not echoed: it is part of a name we do not show.
    """
    ext = file_extension(name)
    if ext and ext not in ACCEPTED_EXTENSIONS:
        raise InvalidImageError(f"unsupported file type; upload {ACCEPTED_HELP}")
    return ext


def analyse_files(classifier, files: list[tuple[str, bytes]], window: str = "lung",
                  max_pixels: int | None = None, examples: bool = False,
                  guard=None) -> list[SliceResult]:
    """The case pipeline (``lungct.pipeline``) on an upload, in upload order.

    ``examples`` keeps the (public) sample names. Each file's failure stays its own.
    """
    slices = [read_slice(name, data) for name, data in files]
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    return analyse_slices(classifier, slices, guard, window, examples=examples, **kwargs)


def case_table(results: list[SliceResult]) -> pd.DataFrame:
    """One row per file, most suspicious first (``suspicion``: P(malignant) weighed by the
    findings score); failed files keep their error text."""
    rows = []
    for rank, r in enumerate(most_suspicious_first(results), start=1):
        row = {"rank": rank if r.ok else None, "file": r.title}
        if r.ok:
            p = r.prediction.probabilities
            row.update({"label": r.prediction.label, "unsure": bool(r.prediction.unsure),
                        **{f"p_{c}": round(float(p.get(c, 0.0)), 4) for c in CLASSES},
                        "suspicion": round(suspicion(r), 4),
                        "status": "ok" if not r.warning else r.warning})
        else:
            row.update({"label": None, "unsure": None, **{f"p_{c}": None for c in CLASSES},
                        "suspicion": None,
                        "status": r.error if r.status != "error" else f"error: {r.error}"})
        rows.append(row)
    columns = ["rank", "file", "label", "unsure", *[f"p_{c}" for c in CLASSES], "suspicion",
               "status"]
    return pd.DataFrame(rows, columns=columns)


def case_csv(results: list[SliceResult], model_name: str = "") -> bytes:
    """The case table as UTF-8 CSV (with a model column when ``model_name`` is given)."""
    table = case_table(results)
    if model_name:
        table.insert(len(table.columns), "model", model_name)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
