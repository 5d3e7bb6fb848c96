"""How the app shows findings (``lungct.findings``): outlines with the diameter beside each,
the caption that says what they are, and a table by slice position.

One drawing for the Classify, Grad-CAM and Study pages and the HTML report, so a
finding looks the same wherever it is read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

CAPTION = ("Findings: candidates of focal abnormal tissue in the lung fields (solid tissue "
           "that is blob-like, not a vessel), found by image analysis and ranked by a scorer "
           "fitted on real tumour boxes; not a diagnosis. Sizes are longest diameters, in mm "
           "where the DICOM pixel spacing is known.")
COLOUR = (255, 193, 7)


def size_text(f) -> str:
    """"41 mm" (DICOM), or "~23 px" for an image without pixel spacing."""
    return f"{f.diameter_mm:.0f} mm" if f.diameter_mm is not None else f"~{f.diameter_px:.0f} px"


def draw(image: np.ndarray, findings: list | None) -> np.ndarray:
    """RGB uint8 of ``image`` ([0, 1] grey or RGB uint8) with each finding's outline, its rank
    and size beside it."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    im = Image.fromarray(image)
    pen = ImageDraw.Draw(im)
    width = max(1, round(max(im.size) / 256))
    for rank, f in enumerate(findings or [], start=1):
        if len(f.outline) >= 2:
            pen.line(list(f.outline) + [f.outline[0]], fill=COLOUR, width=width)
        x1, y0 = f.box[2], f.box[1]
        pen.text((min(x1 + 3, im.size[0] - 60), max(y0 - 4, 0)), f"{rank}: {size_text(f)}",
                 fill=COLOUR)
    return np.asarray(im)


def summary(findings: list | None) -> str:
    """One line for a slice: "2 findings: 41 mm, 12 mm" / "no findings" / ""."""
    if findings is None:
        return ""
    if not findings:
        return "no findings"
    return (f"{len(findings)} finding{'s' if len(findings) > 1 else ''}: "
            + ", ".join(size_text(f) for f in findings))


def table(slices) -> pd.DataFrame:
    """Every finding of a case by slice position: slice, z, size, 3D lesion (best first per
    slice); text cells, "—" where a value is unknown."""
    rows = []
    for r in slices:
        for rank, f in enumerate(r.findings or [], start=1):
            lesion = f.features.get("lesion")
            rows.append({"slice": r.position,
                         "z (mm)": "—" if r.location_mm is None else f"{r.location_mm:.1f}",
                         "finding": rank, "size": size_text(f),
                         "lesion (3D)": "—" if lesion is None else str(lesion)})
    return pd.DataFrame(rows, columns=["slice", "z (mm)", "finding", "size", "lesion (3D)"])


def scorer_card() -> dict | None:
    """The shipped findings scorer's card (``models/findings/card.json``), None when absent."""
    import json

    from lungct.findings import scorer_dir

    path = scorer_dir() / "card.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measured_table(card: dict | None) -> pd.DataFrame:
    """The findings scorer's card figures (``python -m lungct lab findings --write``), one row
    per way it was fitted and reported (the Compare page's findings section)."""
    ways = ((card or {}).get("figures") or {}).get("ways") or {}
    rows = []
    for way, r in ways.items():
        froc = r.get("froc_sensitivity") or {}
        rows.append({"fitted on -> reported on": way.replace("fit ", "").replace("report ", ""),
                     "pointing game": r.get("pointing_game"),
                     "sensitivity at 1 false/slice": froc.get("1.0"),
                     "false findings per slice without tumour":
                         r.get("false_findings_per_slice_unboxed"),
                     "tumour-vs-other AUC": r.get("tumour_vs_other_auc"),
                     "false findings per normal test slice":
                         r.get("normal_test_false_findings_per_slice")})
    return pd.DataFrame(rows)
