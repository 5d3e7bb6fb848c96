"""What the PACS page shows: study and series labels, the verdict banner, the slice table.

Labels use non-identifying attributes only (study date and description,
modalities, counts, the end of the UID to tell studies apart); the client
never returns a patient tag in the first place (``lungct.pacs.client``).
Verdict banners are neutral (info, or warning when unsure or refused): a
malignant verdict must never look like good news.
"""

from __future__ import annotations

import pandas as pd

from lungct.pipeline.report import caution_summary

from lungct.app_support.case import MISSING, probabilities_text


def study_label(study: dict) -> str:
    """'2024-03-01 · CHEST CT · CT/SR · 3 series, 40 instances · UID …4f2a91c0'."""
    mods = "/".join(study.get("modalities") or []) or "no modality"
    return (f"{study.get('date') or 'no date'} · {study.get('description') or 'no description'}"
            f" · {mods} · {study.get('series') or 0} series, {study.get('instances') or 0} "
            f"instances · UID …{str(study.get('study_uid') or '')[-8:]}")


def series_label(series: dict | None) -> str:
    if series is None:
        return "default CT series"
    number = series.get("number")
    return (f"{'#' + str(number) + ' ' if number is not None else ''}"
            f"{series.get('description') or 'no description'} ({series.get('instances') or 0} "
            "instances)")


def slice_table(case) -> pd.DataFrame:
    """One row per slice in anatomical order, every cell text (no None, no raw dicts)."""
    rows = []
    for s in case.as_dict()["slices"]:
        z = s.get("location_mm")
        rows.append({"slice": str(s["index"]), "z (mm)": MISSING if z is None else f"{z:.1f}",
                     "status": s["status"].replace("_", " "),
                     "label": s.get("label") or MISSING,
                     "probabilities": probabilities_text(s.get("probabilities")),
                     "note": s.get("reason") or s.get("warning") or ""})
    columns = ["slice", "z (mm)", "status", "label", "probabilities", "note"]
    return pd.DataFrame(rows, columns=columns)


def verdict_banner(case) -> tuple[str, str]:
    """(kind, text): kind "info", or "warning" when the case is unsure or nothing was classified."""
    v, c = case.verdict, case.counts
    text = (f"Case verdict: {case.label}"
            + (" (unsure: review carefully)" if v and v["unsure"] else "")
            + f". {c['classified']} classified, {c['outside_lungs']} outside the lungs, "
              f"{c['refused']} refused, {c['error']} unreadable.")
    caution = caution_summary(case.as_dict())
    if caution:
        text += f" Caution: {caution}."
    return ("warning" if v is None or v["unsure"] or caution else "info"), text


def stored_text(run) -> str:
    """What went into the PACS: kinds, run number, what it superseded or deleted."""
    if not run.stored:
        return "Nothing was stored in the PACS."
    kinds = " and the ".join({"sr": "SR", "pdf": "PDF"}[k] for k in sorted(run.stored,
                                                                         reverse=True))
    text = f"Stored the {kinds} into the study as run {run.version}"
    text += f" (supersedes run {run.version - 1})." if run.version > 1 else "."
    if run.replaced:
        text += f" Deleted {len(run.replaced)} earlier lungct result series."
    return text

