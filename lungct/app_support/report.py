"""The downloadable case report: one self-contained HTML file, no patient data.

Images are embedded as base64 PNGs, so the file opens anywhere offline. It is
built only from ``SliceResult`` objects, which hold neither file names nor
DICOM tags (see ``lungct.app_support.case``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

import numpy as np
from PIL import Image

from lungct import CLASSES
from lungct.app_support.case import SliceResult, case_verdict, most_suspicious_first
from lungct.app_support.reference import DATASET_CREDIT, DISCLAIMER
from lungct.pipeline.report import caution_summary
from lungct.explain import caption

MAX_SIDE = 512
_BAR_COLOURS = {"normal": "#2e7d32", "benign": "#f9a825", "malignant": "#c62828"}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float (or uint8) grey/RGB image as uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return arr


def png_bytes(image: np.ndarray, max_side: int = MAX_SIDE) -> bytes:
    """PNG file bytes of a grey or RGB image, downscaled to at most ``max_side``."""
    img = Image.fromarray(to_uint8(image))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)  # Pillow writes no text chunks by default
    return buf.getvalue()


def png_data_uri(image: np.ndarray, max_side: int = MAX_SIDE) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, max_side)).decode()


def _bars(probabilities: dict) -> str:
    rows = []
    for c in CLASSES:
        p = float(probabilities.get(c, 0.0))
        rows.append(
            f'<div class="bar"><span class="cls">{c}</span>'
            f'<span class="track"><span class="fill" style="width:{p * 100:.1f}%;'
            f'background:{_BAR_COLOURS[c]}"></span></span><span class="p">{p:.3f}</span></div>')
    return "".join(rows)


_CSS = """
body{font-family:system-ui,Arial,sans-serif;margin:2em;max-width:1100px;color:#222}
.disclaimer{border:2px solid #c62828;background:#fdecea;padding:.8em;border-radius:6px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
.slice{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0;page-break-inside:avoid}
.imgs{display:flex;gap:1em;flex-wrap:wrap}.imgs figure{margin:0}.imgs img{width:320px}
.bar{display:flex;align-items:center;gap:.5em;margin:2px 0}.cls{width:6em}
.track{display:inline-block;width:240px;height:12px;background:#eee}
.fill{display:block;height:12px}.unsure{color:#c62828;font-weight:bold}.err{color:#c62828}
"""


def results_caution(results: list[SliceResult]) -> str | None:
    """``case_report.caution_summary`` of app results: how many slices carry a caution and
    the first one's reasons, or None."""
    return caution_summary({"slices": [r.as_dict() for r in results]})


def build_report(results: list[SliceResult], model_name: str, model_version: str,
                 overlays: dict[int, np.ndarray] | None = None, cam_method: str = "",
                 cam_target: str = "predicted class", generated: dt.datetime | None = None
                 ) -> str:
    """The report as an HTML string.

    ``overlays`` maps a slice's position to its heatmap overlay (RGB uint8).
    """
    overlays = overlays or {}
    generated = generated or dt.datetime.now(dt.timezone.utc)
    e = html.escape
    verdict = case_verdict(results)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>lungct case report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>lungct case report</h1>",
        f"<p class='disclaimer'><strong>{e(DISCLAIMER)}</strong></p>",
        "<table>",
        f"<tr><th>model</th><td>{e(model_name)}</td></tr>",
        f"<tr><th>model version</th><td>{e(model_version)}</td></tr>",
        f"<tr><th>generated</th><td>{e(generated.strftime('%Y-%m-%d %H:%M UTC'))}</td></tr>",
        f"<tr><th>files</th><td>{len(results)} ({sum(r.ok for r in results)} classified)"
        "</td></tr>",
        f"<tr><th>heatmaps</th><td>{e(caption(cam_method, cam_target) if cam_method else 'none')}"
        "</td></tr></table>",
    ]
    if verdict:
        flag = " <span class='unsure'>(unsure: review carefully)</span>" if verdict["unsure"] \
            else ""
        parts += [f"<h2>Case verdict: {e(verdict['label'])}{flag}</h2>",
                  f"<p>Rule: {e(verdict['rule'])}. Deciding slice: "
                  f"{e(verdict['deciding_slice'])}.</p>"]
    else:
        parts.append("<h2>No file could be classified</h2>")
    if caution := results_caution(results):
        parts.append(f"<p class='unsure'>Caution: {e(caution)}</p>")
    parts.append("<h2>Slices, most suspicious first</h2>")
    for r in most_suspicious_first(results):
        parts.append(f"<div class='slice'><h3>{e(r.title)}</h3>")
        if not r.ok:
            parts.append(f"<p class='err'>Not classified: {e(r.error or 'unknown error')}</p>"
                         "</div>")
            continue
        pred = r.prediction
        why = "see the warning below" if r.warning else "top probability below the threshold"
        unsure = f" <span class='unsure'>unsure ({why})</span>" if pred.unsure else ""
        parts.append(f"<p>Label: <strong>{e(pred.label)}</strong>{unsure}</p>")
        if r.warning:
            parts.append(f"<p class='err'>{e(r.warning)}</p>")
        parts.append(_bars(pred.probabilities))
        parts.append("<div class='imgs'>")
        if r.gray is not None:
            parts.append(f"<figure><img alt='slice' src='{png_data_uri(r.gray)}'>"
                         "<figcaption>slice (as decoded, before resizing)</figcaption></figure>")
        if r.position in overlays:
            parts.append(f"<figure><img alt='heatmap' src='{png_data_uri(overlays[r.position])}'>"
                         f"<figcaption>{e(cam_method)} heatmap</figcaption></figure>")
        parts.append("</div></div>")
    parts += [f"<p><small>Model trained on the {e(DATASET_CREDIT)} Heatmaps show where the "
              "model looked, not where disease is.</small></p>", "</body></html>"]
    return "\n".join(parts)
