"""The findings layer: candidates of focal abnormal tissue, on a CT phantom whose truth is
known (a 30 mm mass in one lung, vessels in both), through the case pipeline and its
exports, and the series linking."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from lungct import CLASSES
from lungct.pipeline import ClassifierBase, run_case
from lungct.pipeline.report import case_pdf, finding_lines, pdf_text
from lungct.data.demo_series import ct_dataset
from lungct.errors import LungctError
from lungct.findings import (FEATURES, Finding, Scorer, candidates, find, link_series,
                             series_spacing_problem, shipped_scorer)
from lungct.inference import Prediction
from lungct.lungs import segment
from lungct.preprocess import decode_dicom

SPACING = 0.7          # mm per pixel
MASS = (330, 230, 15.0)  # x, y (pixels) and radius (mm): a 30 mm mass in the image's right lung


def phantom_hu(mass: bool = True, size: int = 512) -> np.ndarray:
    """A chest in HU: air, a fat-and-muscle body, two lungs at -850 with thin vessels,
    a mediastinum between them, and (``mass``) a round solid mass in one lung."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    hu = np.full((size, size), -1000.0, np.float32)
    body = ((xx - 256) / 220) ** 2 + ((yy - 256) / 160) ** 2 < 1
    hu[body] = -100.0
    hu[((xx - 256) / 205) ** 2 + ((yy - 256) / 146) ** 2 < 1] = 40.0
    for cx in (166, 346):
        lung = ((xx - cx) / 70) ** 2 + ((yy - 250) / 105) ** 2 < 1
        hu[lung] = -850.0
        rad = np.hypot(xx - cx, yy - 250)
        for k in range(6):   # vessels: 2-3 px wide segments that leave the lung in one piece
            ang = np.pi * k / 6
            d = np.abs((xx - cx) * np.sin(ang) - (yy - 250) * np.cos(ang))
            hu[lung & (d < 1.2) & (rad > 25) & (rad < 55)] = 40.0
    if mass:
        x, y, r = MASS
        hu[(xx - x) ** 2 + (yy - y) ** 2 < (r / SPACING) ** 2] = 30.0
    return hu


def phantom_dicom(hu: np.ndarray, z: float = 0.0, spacing: float = SPACING) -> bytes:
    ds = ct_dataset()
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class FixedClassifier(ClassifierBase):
    """Calls every slice malignant: the findings stage must not depend on the label."""

    unsure_below, name = 0.6, "fixed"

    def prepare(self, gray, seg=None):
        return np.zeros(1, np.float32)

    def predict_prepared(self, arrays):
        probs = dict(zip(CLASSES, (0.1, 0.1, 0.8)))
        return [Prediction("malignant", probs, "fixed", False) for _ in arrays]


def _lung_window(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu + 1350) / 1500, 0, 1).astype(np.float32)


def test_the_mass_is_a_candidate_with_its_size_and_vessels_are_not():
    gray = _lung_window(phantom_hu())
    cands = candidates(gray, segment(gray), SPACING, hu=True)
    x, y, r = MASS
    inside = [c for c in cands if abs(c.centroid[0] - x) < 8 and abs(c.centroid[1] - y) < 8]
    assert len(inside) == 1
    assert inside[0].diameter_mm == pytest.approx(2 * r, abs=4)
    x0, y0, x1, y1 = inside[0].box
    assert x0 < x < x1 and y0 < y < y1
    # vessels (2-3 px, under 4 mm) are opened away: no other candidate in the lungs' middles
    assert not [c for c in cands if c is not inside[0] and c.diameter_mm < 8]
    assert set(inside[0].features) == set(FEATURES)


def test_without_the_mass_the_lungs_have_no_finding():
    gray = _lung_window(phantom_hu(mass=False))
    assert find(gray, segment(gray), shipped_scorer(), SPACING, hu=True) == []


def test_eight_bit_image_gets_the_same_place_but_no_size_in_mm():
    gray = _lung_window(phantom_hu())
    cands = candidates(gray, segment(gray), None, hu=False)
    x, y, _ = MASS
    hit = [c for c in cands if abs(c.centroid[0] - x) < 8 and abs(c.centroid[1] - y) < 8]
    assert hit and hit[0].diameter_mm is None and hit[0].diameter_px > 30


def test_case_json_carries_findings_for_accepted_slices_only():
    files = [("a.dcm", phantom_dicom(phantom_hu(), z=0.0)),
             ("b.dcm", phantom_dicom(phantom_hu(), z=5.0)),
             ("c.dcm", phantom_dicom(phantom_hu(), z=10.0))]
    case = run_case(files, FixedClassifier())
    d = json.loads(json.dumps(case.as_dict()))
    for s in d["slices"]:
        assert s["status"] == "classified"
        top = s["findings"][0]
        assert set(top) >= {"box", "centroid", "diameter_mm", "score", "outline"}
        assert top["box"][0] < MASS[0] < top["box"][2]
        assert top["diameter_mm"] == pytest.approx(30, abs=4)
        scores = [f["score"] for f in s["findings"]]
        assert scores == sorted(scores, reverse=True)
    lesion = d["lesions"]["lesions"][0]
    assert lesion["slices"] == [1, 2, 3] and lesion["extent_mm"] == pytest.approx(10.0)
    # the report lists them with position and size, in words a reader checks
    lines = finding_lines(d)
    assert any("slice 1 (z = 0.0 mm): finding 1, longest diameter" in line for line in lines)
    assert r"lesion 1 \(3D\): slices 1-3" in pdf_text(case_pdf(d))   # PDF escapes brackets
    # off: no findings key at all, and the verdict is the same
    off = run_case(files, FixedClassifier(), findings=None).as_dict()
    assert "findings" not in off["slices"][0] and "lesions" not in off
    assert off["verdict"] == d["verdict"]


def test_a_slice_the_guard_refuses_has_no_findings():
    from tests.test_case import StatusGuard
    case = run_case([("a.dcm", phantom_dicom(phantom_hu()))], FixedClassifier(),
                    guard=StatusGuard(n_out=1))
    s = case.as_dict()["slices"][0]
    assert s["status"] == "outside_lungs" and "findings" not in s


def test_series_linking_needs_even_spacing_and_says_why_not():
    assert series_spacing_problem([0.0, 5.0, 10.0]) is None
    assert "missing" in series_spacing_problem([0.0, None, 10.0])
    assert "mixed slice spacing" in series_spacing_problem([0.0, 5.0, 15.0])
    f = lambda x: Finding(0.9, (x, 10, x + 20, 30), (x + 10, 20), [], 20.0, 20.0)  # noqa: E731
    out = link_series([[f(0)], [f(5)], [f(100)]], [0.0, 5.0, 15.0])
    assert out["lesions"] == [] and "mixed slice spacing" in out["note"]
    per_slice = [[f(0)], [f(5), f(200)], [f(8)]]
    out = link_series(per_slice, [0.0, 5.0, 10.0])
    assert [les["slices"] for les in out["lesions"]] in ([[1, 2, 3], [2]], [[2], [1, 2, 3]])
    assert per_slice[0][0].features["lesion"] == per_slice[2][0].features["lesion"]


def test_scorer_round_trip_and_clear_errors(tmp_path):
    scorer = shipped_scorer()
    again = Scorer.from_dict(json.loads(json.dumps(scorer.as_dict())))
    feats = [dict.fromkeys(FEATURES, 0.5), dict.fromkeys(FEATURES, 1.5)]
    assert np.allclose(again.score(feats), scorer.score(feats))
    assert 0.0 < scorer.threshold < 1.0
    with pytest.raises(ValueError, match="unknown features"):
        Scorer.from_dict({**scorer.as_dict(), "features": ["colour"]})
    with pytest.raises(LungctError, match="lab findings fit"):
        Scorer.load(tmp_path)


def test_fit_keeps_false_findings_within_its_limits():
    from lungct.lab.findings import NORMAL_FP_GOAL, SliceCands, fit_scorer, measure

    rng = np.random.default_rng(0)

    def cand(tumour: bool) -> Finding:
        feats = {k: float(rng.normal(1.5 if tumour else 0.0)) for k in FEATURES}
        return Finding(0.0, (0, 0, 9, 9) if tumour else (50, 50, 59, 59),
                       (5.0, 5.0) if tumour else (55.0, 55.0), [], None, 10.0, features=feats)

    boxed = [SliceCands("lpcd", "P1", f"b{i}", [(0, 0, 10, 10)], [cand(True), cand(False)])
             for i in range(20)]
    free = [SliceCands("lpcd", "P1", f"u{i}", [], [cand(False) for _ in range(3)])
            for i in range(20)]
    normal = [SliceCands("iq", "train", f"n{i}", [], [cand(False) for _ in range(4)])
              for i in range(40)]
    scorer = fit_scorer(boxed + free + normal)
    assert measure(scorer, normal)["false_findings_per_slice_unboxed"] <= NORMAL_FP_GOAL / 2
    assert measure(scorer, free)["false_findings_per_slice_unboxed"] <= 1.0
    res = measure(scorer, boxed + free)
    assert res["pointing_game"] > 0.8 and res["tumour_vs_other_auc"] > 0.8


def test_most_suspicious_first_weighs_p_malignant_by_the_findings_score():
    from lungct.pipeline import SliceResult, most_suspicious_first, suspicion

    def result(pos, p_mal, score):
        probs = dict(zip(CLASSES, ((1 - p_mal) / 2, (1 - p_mal) / 2, p_mal)))
        return SliceResult(pos, 3, prediction=Prediction("malignant", probs, "x", False),
                           findings=[] if score is not None else None, finding_score=score)

    a, b, c = result(1, 0.9, 0.1), result(2, 0.6, 0.9), result(3, 0.7, None)
    assert suspicion(a) == pytest.approx(0.09) and suspicion(c) == pytest.approx(0.7)
    assert [r.position for r in most_suspicious_first([a, b])] == [2, 1]
    # without the findings stage the order is P(malignant)'s
    a.finding_score = b.finding_score = None
    assert [r.position for r in most_suspicious_first([a, b])] == [1, 2]


def test_the_sr_carries_each_finding_as_a_measurement_group_on_its_slice():
    """TID 1500 in the SR: one planar ROI group per finding, its closed outline on the very
    instance it was found on, and its longest diameter in mm (what a viewer draws)."""
    from pydicom.sr.coding import Code

    from lungct.pacs.results import build_sr
    from lungct.pipeline.series import read_slice

    datas = [phantom_dicom(phantom_hu(), z=z) for z in (0.0, 5.0)]
    sources = [read_slice(f"s{i}.dcm", d).dataset for i, d in enumerate(datas)]
    for i, ds in enumerate(sources):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.10{i}"
    d = run_case([(f"s{i}.dcm", b) for i, b in enumerate(datas)], FixedClassifier()).as_dict()
    sr = build_sr(d, None, sources)
    [container] = [i for i in sr.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = container.ContentSequence
    found = [(s["index"], f) for s in d["slices"] for f in s["findings"]]
    assert len(groups) == len(found) >= 2
    for group, (index, f) in zip(groups, found):
        items = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group.ContentSequence}
        diameter = items[Code("81827009", "SCT", "Diameter").value]
        value = diameter.MeasuredValueSequence[0]
        assert float(value.NumericValue) == pytest.approx(f["diameter_mm"], abs=0.05)
        assert value.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        region = items["111030"]   # Image Region
        assert region.GraphicType == "POLYLINE"
        xy = np.asarray(region.GraphicData, float).reshape(-1, 2)
        assert np.allclose(xy[0], xy[-1]) and len(xy) == len(f["outline"]) + 1
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == sources[index - 1].SOPInstanceUID


# ------------------------------------------------------------------ 3D lung regions

PLEURAL_MASS_MM = 26.0
"""A mass this large on the lung's lateral pleura bites a notch that a 25 mm 2D closing
cannot take back; the lung above and below it can, in 3D."""


def pleural_mass_series() -> tuple[list[float], list[np.ndarray]]:
    """A 25-slice series (5 mm) with a sphere of solid tissue on one lung's lateral edge."""
    zs = [float(z) for z in np.arange(-60, 61, 5)]
    yy, xx = np.mgrid[:512, :512].astype(np.float32)
    out = []
    for z in zs:
        hu = phantom_hu(mass=False)
        r2 = (PLEURAL_MASS_MM / SPACING) ** 2 - (z / SPACING) ** 2
        if r2 > 0:
            hu[((xx - 100) ** 2 + (yy - 250) ** 2 < r2) & (hu < -500)] = 30.0
        out.append(hu)
    return zs, out


def _near_mass(cands) -> list:
    return [c for c in cands if abs(c.centroid[0] - 112) < 25 and abs(c.centroid[1] - 250) < 25]


def test_series_regions_take_back_a_pleural_mass_that_2d_misses():
    from lungct.findings import series_regions

    zs, hus = pleural_mass_series()
    views = []
    for hu in hus:
        gray = np.clip((hu + 1350) / 1500, 0, 1).astype(np.float32)   # the lung window
        views.append((gray, segment(gray), SPACING, True))
    regions = series_regions(views, zs)
    gray, seg, _, _ = views[zs.index(0.0)]
    assert not _near_mass(candidates(gray, seg, SPACING, hu=True))
    found = _near_mass(candidates(gray, seg, SPACING, hu=True, region3d=regions[zs.index(0.0)]))
    assert found and all(c.diameter_mm < 60 for c in found)
    # a series whose slices do not share one grid gets no 3D regions (2D findings only)
    assert series_regions(views[:2], zs[:2]) == [None, None]


def test_case_on_a_series_finds_the_pleural_mass_in_3d():
    zs, hus = pleural_mass_series()
    files = [(f"s{i:02d}.dcm", phantom_dicom(hu, z)) for i, (z, hu) in enumerate(zip(zs, hus))]
    shipped = shipped_scorer()
    every = Scorer(shipped.mean, shipped.scale, shipped.coef, shipped.intercept, 0.0,
                   shipped.features)   # threshold 0: every candidate is a finding
    case = run_case(files, FixedClassifier(), findings=every)
    middle = [r for r in case.slices if r.ok and abs(r.location_mm) < 1e-6]
    assert middle and _near_mass(middle[0].findings or [])
    alone = run_case(files[12:13], FixedClassifier(), findings=every).slices[0]
    assert alone.location_mm == 0.0 and not _near_mass(alone.findings or [])
    assert case.lesions["note"] is None


def test_a_ct_series_without_pixel_spacing_says_its_findings_are_2d():
    """A CT series whose pixel spacing is missing gets 2D findings, and its case says why
    (the Study page and the report show ``lesions["note"]``); a single slice is 2D by design."""
    import pydicom

    zs, hus = pleural_mass_series()
    files = []
    for i, (z, hu) in enumerate(zip(zs, hus)):
        ds = pydicom.dcmread(io.BytesIO(phantom_dicom(hu, z)))
        del ds.PixelSpacing
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files.append((f"s{i:02d}.dcm", buf.getvalue()))
    case = run_case(files, FixedClassifier())
    assert "2D" in case.lesions["note"] and "pixel spacing missing" in case.lesions["note"]
    assert "pixel spacing missing" in "\n".join(finding_lines(case.as_dict()))
    assert "pixel spacing" not in run_case(files[12:13], FixedClassifier()).lesions["note"]


def _close_whole_grid(mask: np.ndarray, radius: float) -> np.ndarray:
    """The closing as it was first written: two distance transforms on the whole grid."""
    import cv2
    pad = int(np.ceil(radius)) + 2
    m = np.pad(mask, pad).astype(np.uint8)
    grown = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius
    closed = cv2.distanceTransform(grown.astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) > radius
    return closed[pad:-pad, pad:-pad]


@pytest.mark.parametrize("seed", range(4))
def test_lung_closing_on_its_bounding_box_equals_the_whole_grid(seed):
    """``_close`` works on the mask's bounding box plus the disk: same pixels as the whole
    grid, for blobs with notches, masks at the grid's edge and empty masks."""
    from lungct.findings import _close

    rng = np.random.default_rng(seed)
    for _ in range(20):
        h, w = rng.integers(20, 90, 2)
        mask = np.zeros((h, w), bool)
        for _ in range(rng.integers(0, 4)):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 15)
            yy, xx = np.ogrid[:h, :w]
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        mask &= rng.random((h, w)) > 0.05          # speckle holes
        radius = float(rng.uniform(1.5, 12.0))
        np.testing.assert_array_equal(_close(mask, radius), _close_whole_grid(mask, radius))


def test_part_statistics_equal_each_part_measured_alone():
    """The candidates' per-part measures, taken for all parts at once, equal each part's own."""
    from scipy import ndimage as ndi

    from lungct.findings import _part_stats

    rng = np.random.default_rng(3)
    solid = ndi.binary_opening(rng.random((60, 80)) > 0.45)
    blobs, _ = ndi.label(solid)
    # labels 1..8 (column band and blob parity), split across blobs like watershed parts
    parts = np.where(solid, (np.arange(80)[None, :] // 20 + 1) + 4 * (blobs % 2), 0)
    n = int(parts.max())
    d = rng.normal(-200, 150, parts.shape).astype(np.float32)
    dist = rng.random(parts.shape).astype(np.float32)
    stats = _part_stats(parts, n, d, dist, blobs)
    for k in range(1, n + 1):
        sel = parts == k
        if not sel.any():
            assert stats["area"][k] == 0
            continue
        ys, xs = np.nonzero(sel)
        assert stats["area"][k] == sel.sum()
        assert stats["mean"][k] == pytest.approx(d[sel].mean(), abs=1e-3)
        assert stats["sd"][k] == pytest.approx(d[sel].std(), abs=1e-2)
        assert stats["thickness"][k] == dist[sel].max()
        assert stats["blob"][k] == blobs[sel].max()
        assert (stats["y"][k], stats["x"][k]) == pytest.approx((ys.mean(), xs.mean()))
