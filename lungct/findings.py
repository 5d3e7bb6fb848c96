"""Findings: candidates of focal abnormal tissue in the lung fields, with outline and size.

A slice classifier trained on one hospital's per-patient labels cannot say *where*;
this layer looks for it directly, by classical image analysis that carries over to
any scanner, and a small scorer fitted on real tumour boxes (``models/findings/``):

1. **Density.** Hounsfield units for DICOM (the guard's lung window is linear in HU,
   so HU come back from its grey levels exactly); for 8-bit images an equivalent from
   the segmentation's two anchors, lung median -> -850 HU and soft-tissue median ->
   +40 HU, so one threshold (-400 HU: solid tissue, not aerated lung) serves both.
2. **Lung fields.** Aerated regions (< -400 HU) inside the body, not touching the
   image frame, not outside air, the two largest. Each lung is closed with a 25 mm
   disk and its holes filled: a mass inside the lung, or one that touches the pleura
   or the hilum and bites into the lung's outline, comes back into its region.
3. **Candidates.** Solid tissue in those regions, opened with a 4 mm disk (vessels
   and fissures thinner than that drop out), split where a thin bridge joins two
   blobs (watershed on the distance map: a mass and the vessel that leads into it).
4. **Score.** A logistic model over shape, density and place (thickness, enclosure
   by lung, solidity, density and its spread, size against the lung, position):
   ``Scorer``, fitted by ``python -m lungct lab findings fit`` on real tumour boxes
   and normal slices. A finding is a candidate whose score clears its threshold.
5. **Series.** Findings of neighbouring slices that overlap are one lesion in 3D:
   a mass spans several slices, a vessel crossing the plane one or two
   (``link_series``).

Sizes are in mm where the pixel spacing is known (DICOM); for 8-bit images the
geometry is scaled by an assumed chest width (``ASSUMED_BODY_MM``), used for the
shape measures only, and ``diameter_mm`` is ``None``.

Candidates of focal abnormal tissue, not a diagnosis: a finding says where to look.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from lungct.lungs import bbox

HU_LUNG_WINDOW = (1500.0, -600.0)
"""The guard's DICOM window (width, level): its grey g in [0, 1] is HU = g*1500 - 1350."""
SOLID_HU = -400.0
"""Solid tissue (mass, vessel, wall) above, aerated lung below."""
CLOSE_MM = 25.0
"""Each lung is closed with a disk of this radius and its holes filled: a bite up to 5 cm
across (a mass on the pleura, hilum or mediastinum) comes back into the lung's region; the
heart's and the diaphragm's wide curves do not."""
OPEN_MM = 4.0
MIN_LUNG_MM2 = 1500.0
"""An aerated region smaller than this (15 cm^2) is trachea, bowel gas or a bulla, not a lung."""
MIN_AREA_MM2 = 30.0
SPLIT_MM = 8.0
"""Blob centres closer than this are one blob (watershed markers)."""
MAX_DIAMETER_MM = 80.0
"""A candidate wider than this (where the spacing is known) is heart, liver or mediastinum:
lung masses this large are rare, and the scorer, which likes size, ranked those first."""
CLOSE3D_MM = 30.0
"""Series: each lung is closed in 3D with a ball of this radius (``series_regions``)."""
ASSUMED_BODY_MM = 330.0
"""Chest width assumed for an 8-bit image without pixel spacing (adult chest, 30-36 cm)."""
FEATURES = ("thickness_mm", "log_area", "enclosure", "solidity", "density",
            "density_sd", "rel_area", "medial", "posterior")


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


@dataclass
class Finding:
    """One candidate lesion, in the input image's pixels."""

    score: float
    box: tuple[int, int, int, int]
    """x0, y0, x1, y1 (end-inclusive)."""
    centroid: tuple[float, float]
    """x, y: the candidate's centre of mass."""
    outline: list[tuple[int, int]] | None
    """Polygon (x, y) around the finding; None for a candidate not kept (not drawn)."""
    diameter_mm: float | None
    """Longest diameter in mm; None where the pixel spacing is unknown."""
    diameter_px: float
    slice_position: int | None = None
    location_mm: float | None = None
    features: dict = field(default_factory=dict, repr=False)
    blob: int = field(default=0, repr=False)
    """The connected solid region it was split from (parts of one blob may merge back)."""
    region: tuple | None = field(default=None, repr=False)
    """(y0, x0, mask) on the working grid, and ``grid`` how that maps to the input."""
    grid: tuple | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        out = {"score": round(float(self.score), 4), "box": [int(v) for v in self.box],
               "centroid": [round(float(v), 1) for v in self.centroid],
               "diameter_mm": None if self.diameter_mm is None else round(self.diameter_mm, 1),
               "outline": [[int(x), int(y)] for x, y in _drawn(self).outline or []]}
        if self.slice_position is not None:
            out["slice_position"] = self.slice_position
        if self.location_mm is not None:
            out["location_mm"] = round(self.location_mm, 3)
        return out


def density(gray: np.ndarray, seg, hu: bool) -> np.ndarray:
    """HU (or the 8-bit equivalent) on the segmentation's working grid."""
    oy, ox = seg.offset
    h, w = seg.body.shape
    inner = np.asarray(gray, np.float32)[oy:oy + round(h * seg.scale), ox:ox + round(w * seg.scale)]
    small = cv2.resize(inner, (w, h), interpolation=cv2.INTER_AREA)
    if hu:
        width, level = HU_LUNG_WINDOW
        return small * width + (level - width / 2)
    span = max(seg.tissue_level - seg.lung_level, 0.05)
    return -850.0 + (small - seg.lung_level) * (890.0 / span)


def _mm_per_px(seg, spacing_mm: float | None) -> float:
    """mm per working pixel: from the pixel spacing, else from an assumed chest width."""
    if spacing_mm:
        return float(spacing_mm) * seg.scale
    if seg.body_box is None:
        return 1.0
    width_px = (seg.body_box[3] - seg.body_box[1]) / seg.scale
    return ASSUMED_BODY_MM / max(width_px, 1.0)


def lung_fields(d: np.ndarray, body: np.ndarray, mm: float,
                seg_lungs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aerated lung (< SOLID_HU inside the body), per lung: the two largest aerated regions
    that the slice's one segmentation (``seg_lungs``, the guard's lung fields) calls lung.
    Choosing them by size and density alone took outside air trapped under a blanket
    (about -950 HU after resampling) for a lung on one scanner (README, Findings)."""
    inner = cv2.erode(body.astype(np.uint8), _disk(2)).astype(bool)
    air = (d < SOLID_HU) & inner
    lab, n = ndi.label(air)
    if not n or seg_lungs.shape != air.shape:
        return np.zeros_like(air), []
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    inseg = np.bincount(lab.ravel(), weights=seg_lungs.ravel().astype(np.float64),
                        minlength=n + 1)
    lung_like = (sizes * mm * mm >= MIN_LUNG_MM2) & (inseg >= 0.3 * sizes)
    order = np.argsort(-sizes[1:]) + 1
    lungs = [lab == k for k in order[lung_like[order]][:2]]
    mask = np.zeros_like(air)
    for m in lungs:
        mask |= m
    return mask, lungs


def lung_regions(lungs: list[np.ndarray], mm: float) -> np.ndarray:
    """Where a lesion of the lung can lie: each lung closed with a ``CLOSE_MM`` disk, holes
    filled (the nodules inside, and masses that bite into its outline, come back in).

    Its convex hull was tried too (README, Findings): it takes back masses on the
    mediastinum but also a sliver of mediastinum along every lung, and ranked worse."""
    region = np.zeros(lungs[0].shape, bool) if lungs else np.zeros((1, 1), bool)
    for lung in lungs:
        region |= _fill_holes(_close(lung, CLOSE_MM / mm))
    return region


def _close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Closing with a Euclidean disk, by two distance transforms (a 25 mm disk is 40 px
    across, where a structuring-element closing costs ten times as much), on the mask's
    bounding box plus the disk: a closing stays inside its mask's convex hull, and the
    nearest pixel the dilation leaves out always lies within that margin, so the answer is
    the whole image's at a fraction of the cost."""
    box = bbox(mask)
    out = np.zeros(mask.shape, bool)
    if box is None:
        return out
    y0, x0, y1, x1 = box
    pad = int(np.ceil(radius)) + 2
    m = cv2.copyMakeBorder(mask[y0:y1, x0:x1].astype(np.uint8), pad, pad, pad, pad,
                           cv2.BORDER_CONSTANT, value=0)
    grown = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius
    closed = cv2.distanceTransform(grown.astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) > radius
    out[y0:y1, x0:x1] = closed[pad:-pad, pad:-pad]
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: what the outside, flooded from the border, misses."""
    m = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = m.copy()
    cv2.floodFill(flood, np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8), (0, 0), 1)
    return (mask | (flood[1:-1, 1:-1] == 0))


def _split(solid: np.ndarray, mm: float) -> tuple[np.ndarray, int, np.ndarray]:
    """Parts of the solid mask: watershed on the distance map from blob centres at least
    SPLIT_MM apart, so a mass joined to a sliver of mediastinum by a thin bridge parts."""
    from skimage.segmentation import watershed

    dist = cv2.distanceTransform(solid.astype(np.uint8), cv2.DIST_L2, 5)
    size = max(3, int(round(SPLIT_MM / mm)) | 1)   # a square maximum filter, as a dilation
    peaks = (dist == cv2.dilate(dist, np.ones((size, size), np.uint8))) & \
        (dist * mm >= OPEN_MM * 0.9)
    markers, n = ndi.label(peaks)
    if not n:
        return np.zeros(solid.shape, np.int32), 0, dist
    parts = watershed(-dist, markers, mask=solid)
    return parts, n, dist


def candidates(gray: np.ndarray, seg, spacing_mm: float | None = None,
               hu: bool = False, region3d: np.ndarray | None = None) -> list[Finding]:
    """Every candidate of one slice with its features (score 0): the scorer ranks them.

    ``gray`` is the slice as the guard saw it (for DICOM the lung window, ``hu=True``),
    ``seg`` its ``lungct.lungs.Segmentation``; coordinates come back in ``gray``'s pixels.
    ``region3d``: this slice's lung region from its series closed in 3D
    (``series_regions``), added to the slice's own. Two anatomical limits: a candidate
    does not cross the body's midline (the mediastinum and heart do; a lesion of one lung
    does not), and where the spacing is known it is at most ``MAX_DIAMETER_MM`` across.
    """
    if seg.body_box is None or not seg.body.any():
        return []
    mm = _mm_per_px(seg, spacing_mm)
    d = density(gray, seg, hu)
    lung_mask, lungs = lung_fields(d, seg.body, mm, seg.lungs)
    if not lungs:
        return []
    region = lung_regions(lungs, mm)
    if region3d is not None and region3d.shape == region.shape:
        region |= region3d & seg.body
    # the rest runs on the region's bounding box with a margin of empty pixels wider than
    # the opening's disk: every step below gives the whole grid's answer there
    margin = max(1, int(round(OPEN_MM / mm))) + 2
    ry0, rx0, ry1, rx1 = bbox(region)
    cy0, cx0 = max(ry0 - margin, 0), max(rx0 - margin, 0)
    crop = np.s_[cy0:ry1 + margin, cx0:rx1 + margin]
    d, lung_mask = d[crop], lung_mask[crop]
    solid = cv2.morphologyEx(((d > SOLID_HU) & region[crop]).astype(np.uint8),
                             cv2.MORPH_OPEN, _disk(OPEN_MM / mm)).astype(bool)
    parts, n, dist = _split(solid, mm)
    if not n:
        return []
    blobs, _ = ndi.label(solid)
    stats = _part_stats(parts, n, d, dist, blobs)
    lung_area = float(lung_mask.sum())
    by0, bx0, by1, bx1 = [v / seg.scale for v in (seg.body_box[0] - seg.offset[0],
                                                   seg.body_box[1] - seg.offset[1],
                                                   seg.body_box[2] - seg.offset[0],
                                                   seg.body_box[3] - seg.offset[1])]
    mid_x, half_w = (bx0 + bx1) / 2 - cx0, max((bx1 - bx0) / 2, 1.0)   # on the crop
    grid = (seg.scale, seg.offset, mm, spacing_mm is not None)
    ring_k = _disk(2)
    out = []
    for k, sl in enumerate(ndi.find_objects(parts), start=1):
        if sl is None:
            continue
        area = stats["area"][k] * mm * mm
        ys, xs = sl
        if area < MIN_AREA_MM2 or xs.start <= mid_x <= xs.stop - 1:
            continue
        y0, y1 = max(ys.start - 3, 0), min(ys.stop + 3, parts.shape[0])
        x0, x1 = max(xs.start - 3, 0), min(xs.stop + 3, parts.shape[1])
        part = parts[y0:y1, x0:x1] == k
        f, solidity = _geometry(part, y0 + cy0, x0 + cx0, grid, 0.0, {},
                                int(stats["blob"][k]), drawn=False)
        if f.diameter_mm is not None and f.diameter_mm > MAX_DIAMETER_MM:
            continue
        ring = cv2.dilate(part.astype(np.uint8), ring_k).astype(bool) & ~part
        lung_ring = lung_mask[y0:y1, x0:x1][ring]
        posterior = (float(stats["y"][k]) + cy0 - by0) / max(by1 - by0, 1.0)
        f.features = {
            "thickness_mm": float(stats["thickness"][k]) * mm,
            "log_area": float(np.log(area)),
            "enclosure": np.count_nonzero(lung_ring) / lung_ring.size if lung_ring.size else 0.0,
            "solidity": solidity,
            "density": min(max(float(stats["mean"][k]), -400.0), 200.0) / 100.0,
            "density_sd": min(float(stats["sd"][k]), 400.0) / 100.0,
            "rel_area": float(stats["area"][k]) / max(lung_area, 1.0),
            "medial": 1.0 - min(abs(float(stats["x"][k]) - mid_x) / half_w, 1.0),
            "posterior": min(max(posterior, 0.0), 1.0),
        }
        out.append(f)
    return out


def _part_stats(parts: np.ndarray, n: int, d: np.ndarray, dist: np.ndarray,
                blobs: np.ndarray) -> dict[str, np.ndarray]:
    """Per part 0..n, one pass over the grid each: pixel count, density mean and spread,
    thickest point, centre (y, x) and the solid blob it was split from."""
    lab = parts.ravel()
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)
    per = np.maximum(count, 1.0)
    vals = d.ravel().astype(np.float64)
    mean = np.bincount(lab, weights=vals, minlength=n + 1) / per
    sq = np.bincount(lab, weights=vals * vals, minlength=n + 1) / per
    yy, xx = np.indices(parts.shape)
    thickness, blob = np.zeros(n + 1, np.float32), np.zeros(n + 1, blobs.dtype)
    np.maximum.at(thickness, lab, dist.ravel())
    np.maximum.at(blob, lab, blobs.ravel())
    return {"area": count, "mean": mean, "sd": np.sqrt(np.maximum(sq - mean * mean, 0.0)),
            "thickness": thickness, "blob": blob,
            "y": np.bincount(lab, weights=yy.ravel(), minlength=n + 1) / per,
            "x": np.bincount(lab, weights=xx.ravel(), minlength=n + 1) / per}


def _geometry(mask: np.ndarray, y0: int, x0: int, grid: tuple, score: float, features: dict,
              blob: int, drawn: bool = True) -> tuple[Finding, float]:
    """A ``Finding`` for a mask crop at (y0, x0) of the working grid: box, centroid, longest
    diameter (across the convex hull) in the input's pixels, mm when known, and (``drawn``)
    its outline; a candidate's outline waits until it is kept (``_drawn``): most are not.
    With it the mask's solidity from the same hull, area over hull area: 1 for a round
    blob, low for a branching vessel tree."""
    scale, (oy, ox), mm, known = grid
    pts = cv2.findNonZero(mask.astype(np.uint8)).reshape(-1, 2)   # (x, y), row-major order
    px, py = pts[:, 0], pts[:, 1]
    hull = cv2.convexHull(pts)
    hp = hull.reshape(-1, 2).astype(np.float32)
    diam_px = float(np.sqrt(((hp[:, None] - hp[None]) ** 2).sum(-1)).max()) + 1.0
    solidity = min(len(pts) / max(cv2.contourArea(hull), 1.0), 1.0)
    return Finding(
        score=score, blob=blob, region=(y0, x0, mask), grid=grid, features=dict(features),
        box=(int((px.min() + x0) * scale + ox), int((py.min() + y0) * scale + oy),
             int(np.ceil((px.max() + 1 + x0) * scale + ox)) - 1,
             int(np.ceil((py.max() + 1 + y0) * scale + oy)) - 1),
        centroid=(float((px.sum() / len(px) + x0) * scale + ox),
                  float((py.sum() / len(py) + y0) * scale + oy)),
        outline=_outline(mask, y0, x0, grid) if drawn else None,
        diameter_mm=diam_px * mm if known else None, diameter_px=diam_px * scale), solidity


def _outline(mask: np.ndarray, y0: int, x0: int, grid: tuple) -> list[tuple[int, int]]:
    """The polygon around the largest part of a mask crop, in the input's pixels."""
    scale, (oy, ox), _, _ = grid
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [(int(round((x + x0) * scale + ox)), int(round((y + y0) * scale + oy)))
            for c in sorted(contours, key=cv2.contourArea)[-1:] for x, y in c.reshape(-1, 2)]


def _drawn(f: Finding) -> Finding:
    """``f`` with its outline (computed now for a candidate that was kept)."""
    if f.outline is None and f.region is not None:
        f.outline = _outline(f.region[2], f.region[0], f.region[1], f.grid)
    return f


# ------------------------------------------------------------------ scorer

SCORER_DIR = "findings"
"""The scorer's folder under the models folder (``scorer.json``, ``card.json``, README)."""


@dataclass(frozen=True)
class Scorer:
    """A logistic model over ``FEATURES`` (standardised), and the shipped threshold."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    features: tuple[str, ...] = FEATURES

    def score(self, feats: list[dict]) -> np.ndarray:
        if not feats:
            return np.zeros(0)
        x = np.array([[f[k] for k in self.features] for f in feats], dtype=np.float64)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def as_dict(self) -> dict:
        return {"features": list(self.features), "mean": list(self.mean),
                "scale": list(self.scale), "coef": list(self.coef),
                "intercept": self.intercept, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict) -> "Scorer":
        feats = tuple(d["features"])
        if set(feats) - set(FEATURES):
            raise ValueError(f"findings scorer asks for unknown features "
                             f"{sorted(set(feats) - set(FEATURES))}")
        return cls(tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]),
                   float(d["intercept"]), float(d["threshold"]), feats)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "Scorer":
        """The shipped scorer (``models/findings/scorer.json``)."""
        if folder is None:
            from lungct.config import models_dir
            folder = models_dir() / SCORER_DIR
        path = Path(folder) / "scorer.json"
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            from lungct.errors import LungctError
            raise LungctError(f"no findings scorer at {path}: run `python -m lungct lab "
                              "findings fit` or use --no-findings") from None


def find(gray: np.ndarray, seg, scorer: Scorer, spacing_mm: float | None = None,
         hu: bool = False, keep: str = "findings",
         region3d: np.ndarray | None = None) -> list[Finding]:
    """The findings of one accepted slice, best first: candidates scored, those at or above
    the scorer's threshold kept, and kept parts of one solid blob joined back into one
    finding (a mass the watershed cut in pieces is shown and measured whole).
    ``keep="all"``: every candidate as scored, unjoined, for measurement."""
    cands = candidates(gray, seg, spacing_mm, hu, region3d)
    for c, s in zip(cands, scorer.score([c.features for c in cands])):
        c.score = float(s)
    cands.sort(key=lambda c: -c.score)
    return cands if keep == "all" else kept(cands, scorer)


def kept(ranked: list[Finding], scorer: Scorer) -> list[Finding]:
    """The findings among scored candidates: at or above the threshold, parts of one blob
    joined, best first."""
    by_blob: dict[int, list[Finding]] = {}
    for c in ranked:
        if c.score >= scorer.threshold:
            by_blob.setdefault(c.blob, []).append(c)
    out = [_drawn(group[0]) if len(group) == 1 else _joined(group)
           for group in by_blob.values()]
    return sorted(out, key=lambda c: -c.score)


def _joined(parts: list[Finding]) -> Finding:
    """One finding from parts of one blob: their union's outline, box, centroid and longest
    diameter; the best part's score and features."""
    y0 = min(p.region[0] for p in parts)
    x0 = min(p.region[1] for p in parts)
    y1 = max(p.region[0] + p.region[2].shape[0] for p in parts)
    x1 = max(p.region[1] + p.region[2].shape[1] for p in parts)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for py, px, m in (p.region for p in parts):
        mask[py - y0:py - y0 + m.shape[0], px - x0:px - x0 + m.shape[1]] |= m
    best = max(parts, key=lambda p: p.score)
    return _geometry(mask, y0, x0, best.grid, best.score, best.features, best.blob)[0]


# ------------------------------------------------------------------ series

MAX_GAP_MM = 12.0
"""Neighbouring slices further apart than this are not linked (a gap in the series)."""


def _overlap(a: Finding, b: Finding) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1


def series_spacing_problem(locations: list[float | None]) -> str | None:
    """Why a series' findings cannot be linked in 3D, or None when they can."""
    if len(locations) < 2:
        return "a single slice"
    if any(z is None for z in locations):
        return "slice positions missing (no ImagePositionPatient/ImageOrientationPatient)"
    steps = np.diff(sorted(locations))
    if not len(steps) or steps.min() <= 0:
        return "two slices at the same position"
    if steps.max() - steps.min() > 0.1 * steps.min() + 0.05:
        return (f"mixed slice spacing ({steps.min():.1f}-{steps.max():.1f} mm): "
                "linked findings would have wrong extents")
    return None


def link_series(per_slice: list[list[Finding]], locations: list[float | None]) -> dict:
    """Link findings of neighbouring slices whose boxes overlap into 3D lesions.

    ``per_slice`` holds each slice's findings in series order (position order).
    Sets ``lesion`` (1-based id) in each finding's features; returns ``{"lesions":
    [{id, slices, extent_mm, max_diameter_mm, max_score}], "note": ...}``, where
    ``note`` says why there are no 3D lesions when the spacing does not allow them.
    """
    problem = series_spacing_problem(locations)
    if problem:
        return {"lesions": [], "note": f"no 3D linking: {problem}; findings are per slice"}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    flat = [(si, f) for si, fs in enumerate(per_slice) for f in fs]
    for i in range(len(flat)):
        parent[i] = i
    index = {id(f): i for i, (_, f) in enumerate(flat)}
    for si in range(len(per_slice) - 1):
        if abs(float(locations[si + 1]) - float(locations[si])) > MAX_GAP_MM:
            continue
        for a in per_slice[si]:
            for b in per_slice[si + 1]:
                if _overlap(a, b):
                    parent[root(index[id(a)])] = root(index[id(b)])
    groups: dict[int, list[tuple[int, Finding]]] = {}
    for i, (si, f) in enumerate(flat):
        groups.setdefault(root(i), []).append((si, f))
    lesions = []
    for n, members in enumerate(sorted(groups.values(), key=lambda m: -max(f.score for _, f in m)),
                                start=1):
        zs = [float(locations[si]) for si, _ in members]
        diam = [f.diameter_mm for _, f in members if f.diameter_mm is not None]
        for _, f in members:
            f.features["lesion"] = n
        lesions.append({"id": n, "slices": sorted({si + 1 for si, _ in members}),
                        "extent_mm": round(max(zs) - min(zs), 1),
                        "max_diameter_mm": round(max(diam), 1) if diam else None,
                        "max_score": round(max(f.score for _, f in members), 4)})
    return {"lesions": lesions, "note": None}


_SHIPPED: list = []


def scorer_dir() -> Path:
    """``models/findings`` of the models folder, else of the repository (a test's private
    models folder need not copy it)."""
    from lungct.config import models_dir

    folder = models_dir() / SCORER_DIR
    if (folder / "scorer.json").is_file():
        return folder
    return Path(__file__).resolve().parents[1] / "models" / SCORER_DIR


def shipped_scorer() -> Scorer:
    """The shipped scorer (``scorer_dir``), loaded once per process."""
    if not _SHIPPED:
        _SHIPPED.append(Scorer.load(scorer_dir()))
    return _SHIPPED[0]


# ------------------------------------------------------------------ 3D lung regions

_COMMON = 4.0
"""The series' common grid: input pixels per voxel side in-plane."""


def _affine(seg) -> np.ndarray:
    return np.float32([[seg.scale / _COMMON, 0, seg.offset[1] / _COMMON],
                       [0, seg.scale / _COMMON, seg.offset[0] / _COMMON]])


def series_regions(slices: list[tuple], locations: list[float]) -> list[np.ndarray | None]:
    """Each slice's lung region from its series, each lung closed in 3D with a
    ``CLOSE3D_MM`` ball (a voxel grid with the series' spacing) and its holes filled.

    ``slices``: (gray, seg, spacing_mm, hu) per slice in ``locations`` order (a series
    whose spacing ``series_spacing_problem`` accepts). Why 3D: a mass on the pleura, the
    spine or the mediastinum bites a notch into the lung that is wider than any 2D closing
    can take back without taking the heart too; in 3D the lung above and below the mass
    surrounds the notch, and the heart's wide impression stays open (README, Findings,
    for the figures). Each lung is closed on its own side of the body's midline, so the
    two never bridge the mediastinum. A series whose slices do not share one grid gets
    None for every slice (2D findings only).

    The lung fields are found here and again by ``candidates`` (work done twice, kept so
    that ``candidates`` stays one function for single slices and series alike)."""
    shapes = {np.asarray(g).shape[:2] for g, *_ in slices}
    if len(shapes) != 1 or len(slices) < 3:
        return [None] * len(slices)
    in_h, in_w = shapes.pop()
    h, w = int(np.ceil(in_h / _COMMON)), int(np.ceil(in_w / _COMMON))
    sides = np.zeros((2, len(slices), h, w), bool)
    spacing = []
    for k, (gray, seg, spacing_mm, hu) in enumerate(slices):
        if seg is None or seg.body_box is None or not spacing_mm:
            continue
        spacing.append(float(spacing_mm))
        mm = _mm_per_px(seg, spacing_mm)
        _, lungs = lung_fields(density(gray, seg, hu), seg.body, mm, seg.lungs)
        mid = (seg.body_box[1] + seg.body_box[3]) / 2 / _COMMON   # the body's midline
        for lung in lungs:
            common = cv2.warpAffine(lung.astype(np.uint8), _affine(seg), (w, h),
                                    flags=cv2.INTER_NEAREST) > 0
            xs = np.nonzero(common.any(0))[0]
            if len(xs):
                sides[int(xs.mean() > mid), k] |= common
    if not spacing:
        return [None] * len(slices)
    dz = float(np.median(np.abs(np.diff(locations))))
    sampling = (dz, float(np.median(spacing)) * _COMMON, float(np.median(spacing)) * _COMMON)
    closed = [_close3d(sides[i], CLOSE3D_MM, sampling) for i in range(2)]
    out: list[np.ndarray | None] = []
    for k, (gray, seg, spacing_mm, hu) in enumerate(slices):
        if seg is None or seg.body_box is None or not spacing_mm:
            out.append(None)
            continue
        shape = seg.body.shape
        region = np.zeros(shape, bool)
        for i in range(2):
            if closed[i][k].any():
                back = cv2.warpAffine(closed[i][k].astype(np.uint8), _affine(seg),
                                      (shape[1], shape[0]),
                                      flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
                region |= _fill_holes(back)
        out.append(region)
    return out


def _close3d(vol: np.ndarray, radius: float, sampling: tuple) -> np.ndarray:
    """Closing with a ball of ``radius`` mm on an anisotropic grid (two distance maps)."""
    if not vol.any():
        return vol
    pad = [int(np.ceil(radius / s)) + 1 for s in sampling]
    v = np.pad(vol, [(p, p) for p in pad])
    grown = ndi.distance_transform_edt(~v, sampling=sampling) <= radius
    closed = ndi.distance_transform_edt(grown, sampling=sampling) > radius
    return closed[pad[0]:-pad[0], pad[1]:-pad[1], pad[2]:-pad[2]]
