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
    """Every finding of a case by slice position: slice, z, size, score (best first per slice)."""
    rows = []
    for r in slices:
        for rank, f in enumerate(r.findings or [], start=1):
            rows.append({"slice": r.position, "z (mm)": r.location_mm, "finding": rank,
                         "size": size_text(f), "lesion (3D)": f.features.get("lesion"),
                         "score": round(f.score, 3)})
    return pd.DataFrame(rows, columns=["slice", "z (mm)", "finding", "size", "lesion (3D)",
                                       "score"])
