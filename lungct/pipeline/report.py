"""What a case result says, in one place: the PDF report, the DICOM SR, the terminal table.

``report_sections(case_dict, card)`` is the content (verdict and rule, counts,
per-slice findings by position, series facts, model name, version and card
summary, the intended-use statement); :func:`case_pdf` lays it out with fpdf2,
and :mod:`lungct.pacs.results` turns the same sections into an SR. Both are
built from ``Case.as_dict()``, which carries positions, never file names or
patient tags. :func:`format_case` is the table that ``python -m lungct case``
and ``pacs run`` print: only it shows the user's own file names, on the
user's terminal, and nothing stores it.
"""

from __future__ import annotations

import datetime as dt
import os

from lungct import CLASSES

INTENDED_USE = (
    "Intended use: research decision support only. lungct is not a medical device, is not "
    "cleared or approved for diagnosis, and every result needs review by a qualified "
    "radiologist. Its models were trained on one public data set of 110 patients from one "
    "scanner type and have not been validated on other hospitals' data. Heatmaps show where "
    "the model looked, not where disease is.")
TITLE = "lungct case report"


def card_summary(card: dict | None) -> str:
    """One line on what the model scored on its own test split (from its card)."""
    card = card or {}
    m = card.get("test_metrics") or {}
    if not m:
        return "model not evaluated: no test metrics in its card"
    protocol = (card.get("evaluated_on") or {}).get("protocol") or card.get("protocol", "")
    auc = (m.get("roc_auc") or {}).get("malignant")
    parts = [f"accuracy {m['accuracy'] * 100:.1f}%"] if "accuracy" in m else []
    if "malignant_recall" in m:
        parts.append(f"malignant recall {m['malignant_recall'] * 100:.1f}%")
    if auc is not None:
        parts.append(f"malignant AUC {auc:.3f}")
    where = f"{protocol} split " if protocol else ""
    return f"{where}test set ({m.get('n', '?')} slices): " + ", ".join(parts)


def slice_line(s: dict) -> str:
    """One slice's finding by position: "slice 3 (z = -120.0 mm): malignant, P(...)"."""
    where = f"slice {s['index']}" + (f" (z = {s['location_mm']:.1f} mm)"
                                     if s.get("location_mm") is not None else "")
    if s["status"] == "classified":
        p = s["probabilities"]
        probs = ", ".join(f"P({c}) {p[c]:.3f}" for c in CLASSES)
        mark = " (unsure; caution)" if s.get("caution") else (
            " (unsure)" if s.get("unsure") else "")
        return f"{where}: {s['label']}{mark}; {probs}"
    what = {"outside_lungs": "outside the lungs", "refused": "refused",
            "error": "unreadable"}[s["status"]]
    return f"{where}: {what}: {s.get('reason') or ''}".rstrip(": ")


CAUTION_HEADING = "Caution: unlike what the model was validated on"


def caution_summary(case: dict) -> str | None:
    """One line when any classified slice carries a caution (``lungct.pipeline.slice_caution``):
    how many, and the first one's reasons; None otherwise. For banners and tables."""
    slices = [s for s in case["slices"] if s.get("status") == "classified"]
    cautioned = [s for s in slices if s.get("caution")]
    if not cautioned:
        return None
    return (f"{len(cautioned)} of {len(slices)} classified slices carry a caution, their "
            f"answers flagged unsure (slice {cautioned[0]['index']}: {cautioned[0]['caution']})")


def caution_lines(case: dict) -> list[str]:
    """The report's caution section: the summary, each cautioned slice's own reasons when
    they differ from the first's, and the range of rendering scores."""
    summary = caution_summary(case)
    if summary is None:
        return []
    cautioned = [s for s in case["slices"] if s.get("caution")]
    lines = [summary]
    scores = [s["rendering_score"] for s in cautioned if s.get("rendering_score") is not None]
    if len(scores) > 1:
        lines.append(f"rendering scores of the cautioned slices {min(scores):.1f} to "
                     f"{max(scores):.1f}")
    kinds = {_reasons(s["caution"]) for s in cautioned}
    if len(kinds) > 1:   # not every slice for the same reasons: list the others
        first = _reasons(cautioned[0]["caution"])
        lines += [f"slice {s['index']}: {s['caution']}" for s in cautioned
                  if _reasons(s["caution"]) != first]
    return lines


def _reasons(text: str) -> str:
    """A caution's words without its numbers: which reasons, not which scores."""
    import re
    return re.sub(r"[0-9.]+", "#", text)


FINDINGS_HEADING = "Lesion findings (candidates of focal abnormal tissue, not a diagnosis)"


def finding_lines(case: dict) -> list[str]:
    """Each finding by slice position with its size and score; 3D lesions when linked."""
    lines = []
    for s in case["slices"]:
        where = f"slice {s['index']}" + (f" (z = {s['location_mm']:.1f} mm)"
                                         if s.get("location_mm") is not None else "")
        for rank, f in enumerate(s.get("findings") or [], start=1):
            size = (f"longest diameter {f['diameter_mm']:.0f} mm" if f.get("diameter_mm")
                    is not None else "size unknown (no pixel spacing)")
            x, y = f["centroid"]
            lines.append(f"{where}: finding {rank}, {size}, centre at pixel ({x:.0f}, {y:.0f}), "
                         f"score {f['score']:.2f}")
    lesions = (case.get("lesions") or {})
    for les in lesions.get("lesions") or []:
        if len(les["slices"]) > 1:
            size = (f", up to {les['max_diameter_mm']:.0f} mm across"
                    if les.get("max_diameter_mm") is not None else "")
            lines.append(f"lesion {les['id']} (3D): slices {les['slices'][0]}-"
                         f"{les['slices'][-1]}, {les['extent_mm']:.0f} mm along the series{size}")
    if lesions.get("note"):
        lines.append(lesions["note"])
    if not lines and any("findings" in s for s in case["slices"]):
        lines.append("no findings on the classified slices")
    return lines


def report_sections(case: dict, card: dict | None = None,
                    generated: dt.datetime | None = None) -> list[tuple[str, list[str]]]:
    """(heading, lines) in reading order; the SR and the PDF are built from these."""
    generated = generated or dt.datetime.now(dt.timezone.utc)
    c, s, m = case["counts"], case["series"], case["model"]
    flag = " (unsure: review carefully)" if case.get("unsure") else ""
    series = [f"modality {s.get('modality')}, {s.get('slices')} slices"]
    if s.get("slice_thickness_mm"):
        series.append(f"slice thickness {s['slice_thickness_mm']:g} mm")
    if s.get("kernel"):
        series.append(f"kernel {s['kernel']}")
    series.append(f"ordered by {s.get('ordering')}")
    return [
        ("Intended use", [INTENDED_USE]),
        ("Case verdict", [f"{case['verdict']}{flag}", f"Rule: {case['rule']}",
                          f"{c['classified']} slices classified, {c['outside_lungs']} outside "
                          f"the lungs, {c['refused']} refused, {c['error']} unreadable"]),
    ] + ([(CAUTION_HEADING, caution_lines(case))] if caution_lines(case) else []) + [
        ("Series", [", ".join(series)]),
        ("Model", [f"{m['name']} ({m['version']})", card_summary(card),
                   f"generated {generated.strftime('%Y-%m-%d %H:%M UTC')}"]),
        ("Findings by slice position",
         [slice_line(x) for x in case["slices"]]),
    ] + ([(FINDINGS_HEADING, finding_lines(case))]
         if any("findings" in x for x in case["slices"]) else [])


def format_case(case) -> str:
    """The text table of a ``lungct.pipeline.Case``: verdict, rule, series, one line per slice.

    Slices in anatomical order, each with the user's own file name (or why it failed).
    """
    d = case.as_dict()
    c = d["counts"]
    s = d["series"]
    flag = " (unsure: review carefully)" if d["unsure"] else ""
    lines = [f"verdict: {d['verdict']}{flag}", f"rule: {d['rule']}",
             f"series: {s['modality']}, {s['slices']} slices"
             + (f", {s['slice_thickness_mm']:g} mm" if s.get("slice_thickness_mm") else "")
             + (f", kernel {s['kernel']}" if s.get("kernel") else "")
             + f"; ordered by {s['ordering']}",
             f"slices: {c['classified']} classified, {c['outside_lungs']} outside the lungs, "
             f"{c['refused']} refused, {c['error']} unreadable",
             f"model: {d['model']['name']} ({d['model']['version']})"]
    summary = caution_summary(d)
    if summary:
        lines.append(f"CAUTION: {summary}")
    lines += ["", f"{'#':>4} {'z (mm)':>9}  {'status':<13} {'label':<10} {'P(mal)':>7}  "
                  "file / reason"]
    for r in case.slices:
        z = f"{r.location_mm:9.1f}" if r.location_mm is not None else f"{'-':>9}"
        label = r.prediction.label if r.ok else "-"
        pm = f"{r.malignant_probability:7.3f}" if r.ok else f"{'-':>7}"
        note = os.path.basename(r.name or "") + ("" if r.ok else f"  {r.error}") + (
            "  [caution]" if r.ok and r.caution else "")
        lines.append(f"{r.position:>4} {z}  {r.status:<13} {label:<10} {pm}  {note}")
    if d["other_series"]:
        lines.append(f"\n{len(d['other_series'])} other series in the input "
                     "(python -m lungct case --list-series ...)")
    if case.problems:
        lines.append(f"{len(case.problems)} files could not be read:")
        lines += [f"  {os.path.basename(p['file'])}: {p['error']}" for p in case.problems]
    return "\n".join(lines)


def pdf_text(pdf: bytes) -> str:
    """The text drawn by a PDF written here (its Flate streams inflated), for checks and tests."""
    import re
    import zlib

    parts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            parts.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            parts.append(stream.decode("latin-1"))
    return "\n".join(parts)


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: replace what they cannot draw."""
    return text.encode("latin-1", "replace").decode("latin-1")


def case_pdf(case: dict, card: dict | None = None, generated: dt.datetime | None = None) -> bytes:
    """The case report as PDF bytes (A4, core fonts, no images, no names, no tags)."""
    from fpdf import FPDF

    generated = generated or dt.datetime.now(dt.timezone.utc)
    pdf = FPDF(format="A4")
    pdf.set_creation_date(generated)
    pdf.set_title(TITLE)
    pdf.set_creator("lungct")
    pdf.set_author("lungct")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, TITLE, new_x="LMARGIN", new_y="NEXT")
    for heading, lines in report_sections(case, card, generated):
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, _latin1(heading), new_x="LMARGIN", new_y="NEXT")
        size = 8 if heading.startswith("Findings") else 10
        pdf.set_font("Helvetica", "", size)
        if heading in ("Intended use", CAUTION_HEADING):
            pdf.set_text_color(180, 0, 0)
        for line in lines:
            pdf.multi_cell(0, size * 0.5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
        pdf.ln(2)
    return bytes(pdf.output())
