"""Fixed texts and published figures the app shows beside our own results."""

from __future__ import annotations

import json
from pathlib import Path

from lungct.config import LEAKAGE_REPORT, load_config, report_path

DISCLAIMER = (
    "Research decision support, not a diagnostic device. Every result needs a "
    "radiologist's review; it must not be the basis of a diagnosis or treatment.")

DATASET_CREDIT = (
    "IQ-OTH/NCCD lung cancer dataset: Hamdalla F. Al-Yasriy, Muayed S. Al-Huseiny, "
    "Mendeley Data, 2021, doi 10.17632/bhmdr45bh2, licence CC BY 4.0.")
DATASET_URL = "https://doi.org/10.17632/bhmdr45bh2"

PAPER_RESULTS = [
    # The paper's own figures on its image-level split (2,097 images claimed);
    # malignant precision / recall / F1. Not reproducible as such: see the
    # leakage probe row beside them.
    {"model": "paper: VGG16 (transfer)", "accuracy": 0.9714,
     "malignant_precision": 0.96, "malignant_recall": 0.96, "malignant_f1": 0.96},
    {"model": "paper: ViT teacher", "accuracy": 0.9809,
     "malignant_precision": 0.97, "malignant_recall": 0.98, "malignant_f1": 0.98},
    {"model": "paper: VGG16 distilled student", "accuracy": 0.9809,
     "malignant_precision": 0.97, "malignant_recall": 0.98, "malignant_f1": 0.98,
     "note": "2 malignant false negatives out of 112"},
]
PAPER_NOTE = ("Published figures (paper protocol: image-level split, 2,097 images claimed; "
              "the student missed 2 of 112 malignant slices). Copied from the paper, not "
              "re-computed.")


def leakage_reference(path: str | Path | None = None) -> dict:
    """The leakage report (``leakage.json`` in ``reports.dir``) as a dict, or {} when it has
    not been computed."""
    p = Path(path) if path else report_path(load_config(), LEAKAGE_REPORT)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
