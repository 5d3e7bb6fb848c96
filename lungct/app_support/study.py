"""The Study view's logic: display windows, lung outline, heatmap overlay, the malignancy profile.

The case itself comes from ``lungct.pipeline`` (one pipeline), each slice with its
segmentation and, for CT DICOM, its Hounsfield units. The user's file
names appear only in ``session_table`` (their own screen); ``export_csv``
carries slice positions only, like the PDF report and the SR.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from lungct import CLASSES, MALIGNANT_THRESHOLD
from lungct.app_support.case import MISSING, percent
from lungct.preprocess import hu_window

WL_PRESETS = {"lung": (1500.0, -600.0), "mediastinal": (350.0, 50.0), "bone": (2000.0, 300.0)}
"""Display windows (width, level) in HU; "as classified" shows the model's input."""
STATUS_COLOURS = {"classified": "#1f77b4", "outside_lungs": "#9e9e9e", "refused": "#ef6c00",
                  "error": "#c62828"}


def display(r, width: float, level: float) -> np.ndarray | None:
    """A CT DICOM slice in a display window (width, level in HU) from the Hounsfield units
    it carries (``SliceResult.hu``; nothing is read again); None for a slice without HU
    (raster files, other modalities), which is shown as classified."""
    return None if r.hu is None else hu_window(r.hu, width, level)


def lung_outline(seg) -> np.ndarray:
    """Boolean (H, W) outline of the lungs of a slice's ``lungct.lungs.Segmentation``
    (``SliceResult.seg``, made once by the pipeline)."""
    from scipy import ndimage as ndi

    mask = seg.mask("lungs")
    return mask & ~ndi.binary_erosion(mask, iterations=2)


def compose(image: np.ndarray, outline: np.ndarray | None = None,
            heat: np.ndarray | None = None, opacity: float = 0.45) -> np.ndarray:
    """RGB uint8 of a [0, 1] image with an optional heatmap overlay and a lung outline."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    if heat is not None:
        from lungct.explain import overlay
        rgb = overlay(image, heat, opacity).astype(np.float32) / 255.0
    if outline is not None and outline.shape == image.shape:
        rgb[outline] = (0.1, 0.9, 0.3)
    return (rgb * 255).round().astype(np.uint8)


def profile_frame(case) -> pd.DataFrame:
    """One row per slice: position, z, status, P(malignant) (None unless classified)."""
    return pd.DataFrame([{"slice": r.position, "z_mm": r.location_mm, "status": r.status,
                          "p_malignant": r.malignant_probability if r.ok else None}
                         for r in case.slices])


def profile_figure(case, current: int | None = None):
    """P(malignant) along slice position (plotly); unclassified slices as markers at zero."""
    import plotly.graph_objects as go

    df = profile_frame(case)
    by_z = bool(df["z_mm"].notna().all())   # every slice has a DICOM position
    x = df["z_mm"] if by_z else df["slice"]
    fig = go.Figure()
    for status, colour in STATUS_COLOURS.items():
        part = df[df["status"] == status]
        if part.empty:
            continue
        y = part["p_malignant"] if status == "classified" else [0.0] * len(part)
        fig.add_trace(go.Scatter(x=x[part.index], y=y, mode="markers" if status != "classified"
                                 else "lines+markers", name=status.replace("_", " "),
                                 marker={"color": colour, "size": 8}, customdata=part["slice"],
                                 hovertemplate="slice %{customdata}<br>P(malignant) %{y:.3f}"))
    found = [(r.position, r.malignant_probability if r.ok else 0.0, len(r.findings))
             for r in case.slices if r.findings]
    if found:   # where the findings layer found something: click to go there
        pos = [p for p, _, _ in found]
        fig.add_trace(go.Scatter(x=[float(x.iloc[p - 1]) for p in pos],
                                 y=[max(v, 0.0) for _, v, _ in found], mode="markers",
                                 name="findings", customdata=pos,
                                 marker={"symbol": "diamond-open", "size": 14,
                                         "color": "#ff8f00", "line": {"width": 2}},
                                 text=[f"{k} finding{'s' if k > 1 else ''}" for _, _, k in found],
                                 hovertemplate="slice %{customdata}: %{text}"))
    threshold = getattr(case, "threshold", MALIGNANT_THRESHOLD)
    fig.add_hline(y=threshold, line_dash="dot",
                  annotation_text=f"malignant from P >= {threshold:.2f}")
    if current is not None and 1 <= current <= len(df):
        fig.add_vline(x=float(x.iloc[current - 1]), line_color="#c62828")
    if by_z:
        xaxis = {"title": "slice position z (mm)"}
    else:   # slice numbers: whole ticks only
        xaxis = {"title": "slice number (upload order)", "tickmode": "linear", "tick0": 1,
                 "dtick": max(1, math.ceil(len(df) / 12)), "tickformat": "d"}
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis=xaxis, yaxis_title="P(malignant)", yaxis_range=[-0.05, 1.05],
                      legend={"orientation": "h"})
    return fig


def session_table(case, top: int | None = None) -> pd.DataFrame:
    """Most suspicious first, with the user's own file names (for their screen only).

    Every cell is text, "—" where there is no value: a reader never sees None or nan.
    """
    from lungct.pipeline import most_suspicious_first

    rows = []
    for r in most_suspicious_first(case.slices)[:top]:
        z = r.location_mm
        rows.append({"slice": str(r.position), "z (mm)": MISSING if z is None else f"{z:.1f}",
                     "file": r.name or MISSING, "status": r.status.replace("_", " "),
                     "label": (r.prediction.label + (" (unsure)" if r.prediction.unsure
                                                     else "")) if r.ok else MISSING,
                     "P(malignant)": percent(r.malignant_probability) if r.ok else MISSING,
                     "note": (r.warning or "") if r.ok else (r.error or "")})
    columns = ["slice", "z (mm)", "file", "status", "label", "P(malignant)", "note"]
    return pd.DataFrame(rows, columns=columns)


def export_csv(case) -> bytes:
    """The case per slice as CSV: positions and results only (no names, no tags)."""
    rows = []
    for s in case.as_dict()["slices"]:
        probs = s.get("probabilities") or {}
        rows.append({"slice": s["index"], "z_mm": s["location_mm"],
                     "instance_number": s["instance_number"], "status": s["status"],
                     "label": s.get("label"), **{f"p_{c}": probs.get(c) for c in CLASSES},
                     "reason": s.get("reason")})
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
