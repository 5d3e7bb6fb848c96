"""Stage 5, findings: candidates of focal abnormal tissue on every classified slice.

Runs on the rendering the guard judged (for DICOM the lung window, which is
linear in HU) with the slice's one segmentation; slices the guard refused or
left outside the lungs get none (``findings`` None). For a series, the
findings are linked across slices in 3D (``series_lesions``).
"""

from __future__ import annotations

from lungct.pipeline.decode import guard_view
from lungct.pipeline.segment import segment_slice
from lungct.pipeline.slices import SliceResult


def findings_setting(cfg: dict) -> str | None:
    """What params.yaml asks of the findings stage: "shipped", or None when
    ``findings.enabled`` is false (the classification-only path)."""
    return "shipped" if (cfg.get("findings") or {}).get("enabled", True) else None


def findings_scorer(findings="shipped"):
    """The findings stage's scorer: "shipped" (``models/findings``), None or False (off), or
    a ``lungct.findings.Scorer`` as given."""
    if findings is None or findings is False:
        return None
    if findings == "shipped":
        from lungct.findings import shipped_scorer
        return shipped_scorer()
    return findings


def locate(results: list[SliceResult], scorer, regions: list | None = None) -> None:
    """Findings (best first) and the top candidate's score on each classified slice;
    ``regions``: each slice's 3D lung region from its series (``locate_series``)."""
    if scorer is None:
        return
    from lungct.findings import find, kept

    for i, r in enumerate(results):
        if not r.ok or r.gray is None:
            continue
        hu = r.is_dicom and r.modality in (None, "CT")
        try:
            segment_slice(r)
            ranked = find(guard_view(r), r.seg, scorer, r.pixel_spacing_mm if hu else None,
                          hu=hu, keep="all", region3d=regions[i] if regions else None)
            r.finding_score = ranked[0].score if ranked else 0.0
            r.findings = kept(ranked, scorer)
        except Exception as err:
            note = f"findings could not be computed ({type(err).__name__})"
            r.warning = f"{r.warning}; {note}" if r.warning else note


def locate_series(results: list[SliceResult], scorer) -> str | None:
    """Findings of a series' classified slices (run the slice stages with findings off
    first), each lung closed in 3D over a CT series (``lungct.findings.series_regions``):
    a mass on the pleura, spine or mediastinum comes back into its lung's region.

    Returns why a CT series (3 or more CT slices with lung) got 2D findings only, or None;
    single slices and 8-bit images get 2D findings by design (no HU, no spacing)."""
    from lungct.findings import series_regions, series_spacing_problem

    if scorer is None:
        return None
    ct = [r for r in results if r.ok and r.gray is not None and r.is_dicom
          and r.modality in (None, "CT")]
    if len(ct) < 3:
        locate(results, scorer)
        return None
    problem = series_spacing_problem([r.location_mm for r in ct])
    if problem is None and any(not r.pixel_spacing_mm for r in ct):
        problem = "pixel spacing missing"
    if problem:
        locate(results, scorer)
        return problem
    in_ct = {id(r) for r in ct}
    locate([r for r in results if id(r) not in in_ct], scorer)
    ct.sort(key=lambda r: r.location_mm)
    for r in ct:
        segment_slice(r)
    regions = series_regions([(guard_view(r), r.seg, r.pixel_spacing_mm, True) for r in ct],
                             [r.location_mm for r in ct])
    locate(ct, scorer, regions)
    return None


def series_lesions(results: list[SliceResult]) -> dict | None:
    """The series' findings linked in 3D (a mass spans slices; a vessel crossing the plane
    one or two), with each finding's slice position set; None when no findings ran."""
    from lungct.findings import link_series

    with_findings = [r for r in results if r.findings is not None]
    if not with_findings:
        return None
    for r in with_findings:
        for f in r.findings:
            f.slice_position, f.location_mm = r.position, r.location_mm
    return link_series([r.findings for r in with_findings],
                       [r.location_mm for r in with_findings])
