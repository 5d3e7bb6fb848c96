"""Lung fields of an axial CT slice: body outline, lung masks, a lung-centred crop.

Why: a classifier fed the whole exported image learns the export (window,
framing, table, text) and its heatmap lands on the spine; fed the lung
fields in one standard rendering it has to look at the lungs. The same
function serves training, evaluation, the CLI, the guard and the app, so
the model input is identical everywhere.

Classical and explainable, no network: works on the decoded [0, 1] slice
whatever the source (a DICOM in the lung window, an 8-bit JPEG exported in a
narrow window, a screenshot with borders and text), because in every CT
rendering the lungs are the large dark regions *inside* a bright body and
outside air touches the image edge.

1. Uniform frame rows/columns (screenshot borders, letterboxing) are trimmed.
2. The air level is read at the edge of the smoothed slice; the body is the
   largest component brighter than air after an opening (which drops text,
   rulers and thin table lines), closed by its convex hull (a narrow window
   shows the chest wall only as broken speckle).
3. Lungs are components darker than halfway between air and soft tissue
   inside the body (in an airy window not joined to the outside air); a lung may run into an
   image edge where the picture cuts through the body, as cropped
   screenshots do (the air is then read where the edge is outside); each at least
   ``MIN_LUNG_PART`` of the body and thick enough (``MIN_THICKNESS``); in a
   window that shows air grey, regions at the level of air are gaps, and a
   wide band behind the back is the gap above the table. At most two are kept.
4. The crop spans the lung fields, mirrored about the body midline, plus a
   margin, squared; outside the body is set to black (no table, no text); a
   light smoothing makes a narrow window's speckle and a lung window's
   smooth grey alike.
5. ``standardise`` maps the two anchors every rendering shows, the median
   of the lungs and of the soft tissue, to fixed grey levels: the rendering
   shortcut (one source exports darker slices per class) is taken away
   before the model sees the slice.

>>> seg = segment(gray)                       # doctest: +SKIP
>>> seg.has_lungs, seg.lung_fraction, seg.box  # doctest: +SKIP
>>> x = lung_view(gray, 224)                  # the model input, (224, 224) in [0, 1]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

WORK_SIDE = 256
"""Segmentation runs at this longest side (about 2-4 ms on one core)."""
MIN_LUNG_FRACTION = 0.03
"""Lung area / body area from which a slice shows lung, unless a fitted limit says otherwise."""
MIN_LUNG_PART = 0.01
"""A dark region inside the body counts as lung from this fraction of the body area."""
MIN_CRESCENT_PART = 0.004
"""The same in a window that shows outside air grey (a lung window), where level and
enclosure tell gas and open air from lung: the thin crescents of the lung bases count."""
AIRY_LEVEL = 0.08
"""Outside air brighter than this: a window that shows air grey (a lung window)."""
GREY_LUNGS = 0.25
"""Median lung grey (smoothed) from which the lungs show grey: 0.33 or more in every
Lung-PET-CT-Dx slice with lung fields in the lung window, at most 0.13 in IQ-OTH/NCCD's
narrow-window exports and 0.18 in a mediastinal window."""
MIN_THICKNESS = 0.04
"""A lung region's largest inscribed radius, as a share of sqrt(body area), at least."""
MARGIN = 0.08
"""Margin around the lung box, as a fraction of the box's longer side."""
SMOOTH = 1.2
"""Gaussian sigma (pixels of a 224-px view) before standardising: a narrow window's
speckle (soft tissue as salt and pepper) and a lung window's smooth grey become
alike, and reconstruction-kernel noise matters less."""
LUNG_LEVEL, TISSUE_LEVEL = 0.15, 0.65
"""Where ``standardise`` puts the lung median and the soft-tissue median."""


@dataclass(frozen=True)
class Segmentation:
    """Masks at the working resolution and boxes in the input's pixel coordinates.

    ``box`` and ``body_box`` are (y0, x0, y1, x1), end-exclusive; ``box`` is
    the square crop the model sees (may reach past the image edge, which is
    padded black).
    """

    body: np.ndarray
    lungs: np.ndarray
    scale: float
    """Input pixels per working pixel."""
    offset: tuple[int, int]
    """(y, x) of the working grid's origin in the input (trimmed frame)."""
    shape: tuple[int, int]
    box: tuple[int, int, int, int]
    body_box: tuple[int, int, int, int] | None
    lung_level: float
    tissue_level: float

    @property
    def grey_lungs(self) -> bool:
        """Whether lung fields were found and show grey: a lung (wide) window, the way most
        hospitals export chest CT; a narrow window shows them black."""
        return bool(self.lungs.any()) and self.lung_level >= GREY_LUNGS

    @property
    def body_fraction(self) -> float:
        """Body area / image area (trimmed frame)."""
        return float(self.body.mean())

    @property
    def lung_fraction(self) -> float:
        """Lung area / body area: about 0.2-0.5 mid-chest, 0 in the neck or abdomen."""
        body = float(self.body.sum())
        return float(self.lungs.sum()) / body if body else 0.0

    @property
    def n_lungs(self) -> int:
        return int(ndi.label(self.lungs)[1])

    @property
    def has_lungs(self) -> bool:
        """Whether lung fields show, by the default limit (the guard's card holds the fitted one)."""
        return self.lung_fraction >= MIN_LUNG_FRACTION

    def mask(self, which: str = "lungs") -> np.ndarray:
        """A mask at the input's resolution: "lungs", "body", or "chest" (the convex hull
        of the lung fields, a little grown: lungs, the masses in them, hila and
        mediastinum, not the chest wall or the table)."""
        if which not in ("lungs", "body", "chest"):
            raise ValueError(f"unknown mask {which!r}: lungs, body or chest")
        small = {"lungs": self.lungs, "body": self.body}.get(which)
        if which == "chest":
            small = (ndi.binary_dilation(_hull(self.lungs), iterations=3) & self.body
                     if self.lungs.any() else self.body)
        h, w = self.shape
        out = np.zeros((h, w), dtype=bool)
        oy, ox = self.offset
        th, tw = round(small.shape[0] * self.scale), round(small.shape[1] * self.scale)
        big = Image.fromarray(small.astype(np.uint8) * 255).resize((tw, th), Image.Resampling.NEAREST)
        out[oy:oy + th, ox:ox + tw] = np.asarray(big)[: h - oy, : w - ox] > 127
        return out


def _as_gray(gray) -> np.ndarray:
    arr = np.asarray(gray, dtype=np.float32)
    if arr.ndim == 2 and min(arr.shape) >= 8:
        lo, hi = float(arr.min()), float(arr.max())  # NaN makes both NaN: not in range
        if 0.0 <= lo and hi <= 1.0:  # a decoded slice: already in range, nothing to copy
            return arr
        if np.isfinite(arr).all():
            return np.clip(arr, 0.0, 1.0)
    raise ValueError(f"expected a finite 2-D grey slice of at least 8x8, got shape {arr.shape}")


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
"""scipy.ndimage's default 2-D structure (4-connectivity), for OpenCV's morphology."""


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndi.binary_erosion(mask, iterations=n)`` pixel for pixel (outside the image counts
    as background), on OpenCV: several times faster on a 256-px grid."""
    out = cv2.erode(mask.astype(np.uint8), _CROSS, iterations=iterations,
                    borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def _open(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndi.binary_opening(mask, iterations=n)`` pixel for pixel, on OpenCV."""
    out = cv2.dilate(_erode(mask, iterations).view(np.uint8), _CROSS, iterations=iterations,
                     borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """``ndi.gaussian_filter(img, sigma)`` (same kernel, radius ``int(4 sigma + 0.5)``, same
    reflecting border) on OpenCV in float32: about twice as fast, equal to 2e-7."""
    r = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 / float(sigma) ** 2 * x ** 2)
    k = (k / k.sum()).astype(np.float32)
    return cv2.sepFilter2D(np.ascontiguousarray(img, dtype=np.float32), cv2.CV_32F, k, k,
                           borderType=cv2.BORDER_REFLECT)


def _sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels per label 1..n as float64 (what ``ndi.sum(mask, labels, 1..n)`` gives)."""
    return np.bincount(labels.ravel(), minlength=n + 1)[1:n + 1].astype(np.float64)


def trim_frame(gray: np.ndarray, tol: float = 0.01) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) without uniform edge rows/columns (borders, letterboxing).

    A row or column belongs to the frame while its spread is below ``tol``
    and its mean equals the first edge's (a black frame next to black air is
    air; trimming it too is harmless).
    """
    h, w = gray.shape

    def flat(rows: np.ndarray) -> np.ndarray:
        # uniform, or a lit frame (not black air) uniform but for a title bar or a few marks;
        # a row whose whole range is below tol has a spread below tol: only the others
        # need the median and spread
        out = (rows.max(axis=1) - rows.min(axis=1)) < tol
        if out.all():
            return out
        rest = rows[~out]
        med = np.median(rest, axis=1, keepdims=True)
        mostly = (np.abs(rest - med) <= 2 * tol).mean(axis=1) >= 0.9
        out[~out] = (rest.std(axis=1) < tol) | (mostly & (med[:, 0] > 0.05))
        return out

    def run(lines: np.ndarray, uniform: np.ndarray) -> int:
        # frame lines lie at the edges: skip the uniform ones (one reduction over the
        # image), then test the rest from the first that is not uniform inward, that
        # line alone (in most slices it is not frame: done) and then a chunk at a time,
        # and stop at the first line that is not frame (same answer as testing every
        # line, a fraction of the work)
        n = lines.shape[0]
        start = int(np.argmin(uniform)) if not uniform.all() else n
        step = 1
        while start < n:
            chunk = flat(lines[start:start + step])
            if not chunk.all():
                return start + int(np.argmin(chunk))
            start, step = start + step, 16
        return n

    rows = (gray.max(axis=1) - gray.min(axis=1)) < tol
    cols = (gray.max(axis=0) - gray.min(axis=0)) < tol
    y0, y1 = run(gray, rows), h - run(gray[::-1], rows[::-1])
    x0, x1 = run(gray.T, cols), w - run(gray.T[::-1], cols[::-1])
    if y1 - y0 < h // 4 or x1 - x0 < w // 4:  # nearly all flat: keep everything
        return 0, 0, h, w
    return y0, x0, y1, x1


def _resize(gray: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if not n:
        return mask
    sizes = _sizes(labels, n)
    return labels == int(np.argmax(sizes)) + 1


def segment(gray: np.ndarray) -> Segmentation:
    """Body and lung masks, and the lung crop box, of one decoded slice."""
    g = _as_gray(gray)
    h, w = g.shape
    y0, x0, y1, x1 = trim_frame(g)
    inner = g[y0:y1, x0:x1]
    scale = max(inner.shape) / WORK_SIDE
    wh, ww = max(8, round(inner.shape[0] / scale)), max(8, round(inner.shape[1] / scale))
    small = _smooth(_resize(inner, wh, ww), 2.0)
    air = float(np.median(np.concatenate([small[:3].ravel(), small[-3:].ravel(),
                                          small[:, :3].ravel(), small[:, -3:].ravel()])))
    top = float(np.percentile(small, 99))
    body = _body(small, air, top)
    # The sides where the picture itself ends (no frame trimmed there): only there can the
    # picture cut through the body; past a trimmed side lies frame or air.
    at_edge = _edge_sides(small.shape, (y0 == 0, y1 == h, x0 == 0, x1 == w), 3)
    cut = body & at_edge
    if cut.any():
        # A crop into the chest: the edge there is chest wall and lung, not air, so the
        # air is read where the edge is outside the body (with no outside air in the
        # picture, at the darkest level it shows).
        ring = _edge_sides(small.shape, (True,) * 4, 3)
        outside = ring & ~body
        cut_air = (float(np.median(small[outside])) if outside.sum() >= 0.05 * ring.sum()
                   else float(np.percentile(small, 1)))
        if abs(cut_air - air) > 0.01:
            air = cut_air
            body = _body(small, air, top)
            cut = body & at_edge
    if body.any():
        inside = small[body]
        m0 = float(np.median(inside))
        upper = inside[inside > (air + m0) / 2]
        tissue_level = float(np.median(upper)) if upper.size else m0
    else:
        tissue_level = top
    mid = (air + tissue_level) / 2
    dark = _open((small < mid) & _erode(body, 3), 2)
    labels, n = ndi.label(dark)
    lungs = np.zeros_like(body)
    if n:
        edge = np.zeros_like(body)
        edge[[0, -1], :] = edge[:, [0, -1]] = True
        touching = set(np.unique(labels[edge & ~cut & (labels > 0)]).tolist())
        sizes = _sizes(labels, n)
        order = np.argsort(sizes)[::-1]
        body_area = max(float(body.sum()), 1.0)
        # A window that shows outside air grey (every lung window: air at -1000 HU is
        # above its floor) is told apart from a narrow one (both clipped to black).
        airy = air > AIRY_LEVEL
        # there gas and open air are told from lung by level and by enclosure (below), so
        # smaller dark regions may count: the crescents of the lung bases
        least = (MIN_CRESCENT_PART if airy else MIN_LUNG_PART) * body_area
        big = [int(i) + 1 for i in order[:12]
               if int(i) + 1 not in touching and sizes[i] >= least]
        if airy:
            # Lung shows greyer than air; dark regions at the level of air are gaps
            # (table, arms, bowel gas), not lung.
            big = [k for k in big if np.percentile(small[labels == k], 10) > air + 0.04]
        if airy and big:
            # A lung is walled in by tissue; a dark pocket joined to the outside air
            # through dark pixels (the gap under a blanket, between arm and chest, which
            # the body's convex hull takes in) is not. A narrow window shows the chest
            # wall only as broken speckle, so this holds in an airy window only.
            # The outside air is what reaches the image edge outside the body: where the
            # picture cuts through the body (a crop into the chest), a lung running into
            # the edge is walled in by the body all the same.
            open_lab, _ = ndi.label(small < mid)
            outside = np.unique(open_lab[edge & ~cut & (open_lab > 0)])
            open_air = np.isin(open_lab, outside)
            big = [k for k in big if not open_air[labels == k].any()]
        if not airy:
            # A lung is a thick region; a thin ring along the body wall is subcutaneous
            # fat in a soft-tissue window (its largest inscribed circle is small for the
            # body). An airy window shows fat far brighter than lung, so thin dark regions
            # there are lung (the crescents of the lung bases) and are kept.
            thick = MIN_THICKNESS * np.sqrt(body_area)
            big = [k for k in big if _inscribed_radius(labels, k) >= thick]
        # A wide flat band across the midline behind the body's centre is the gap
        # between the back and the table pad, never a lung.
        bb = bbox(body) or (0, 0, wh, ww)
        big = [k for k in big if not _is_band(labels == k, bb)]
        kept = big[:2]
        if kept:
            lungs = np.isin(labels, kept)
    lung_level = float(np.median(small[lungs])) if lungs.any() else air

    def to_input(box):  # working (y0, x0, y1, x1) -> input pixels
        return (y0 + box[0] * scale, x0 + box[1] * scale, y0 + box[2] * scale,
                x0 + box[3] * scale)

    body_box = bbox(body)
    target = bbox(lungs) if lungs.any() else body_box
    if target is not None and body_box is not None:
        # across: the lung fields mirrored about the body's midline, so one lung found
        # (or one diseased lung that looks solid) frames the chest as two would, and a
        # scanner table wider than the patient does not widen the crop; down: the lungs
        cx = (body_box[1] + body_box[3]) / 2
        target = (target[0], min(target[1], 2 * cx - target[3]), target[2],
                  max(target[3], 2 * cx - target[1]))
    if target is None:
        crop = (0, 0, h, w)
    else:
        by0, bx0, by1, bx1 = to_input(target)
        side = max(by1 - by0, bx1 - bx0) * (1 + 2 * MARGIN)
        cy, cx = (by0 + by1) / 2, (bx0 + bx1) / 2
        crop = (int(round(cy - side / 2)), int(round(cx - side / 2)),
                int(round(cy + side / 2)), int(round(cx + side / 2)))
    return Segmentation(body=body, lungs=lungs, scale=scale, offset=(y0, x0), shape=(h, w),
                        box=crop,
                        body_box=None if body_box is None else
                        tuple(int(round(v)) for v in to_input(body_box)),
                        lung_level=lung_level, tissue_level=tissue_level)


def _edge_sides(shape: tuple[int, int], sides: tuple[bool, bool, bool, bool],
                width: int) -> np.ndarray:
    """A mask of the ``width``-pixel strips along the chosen sides (top, bottom, left, right)."""
    out = np.zeros(shape, bool)
    for keep, strip in zip(sides, (np.s_[:width], np.s_[-width:], np.s_[:, :width],
                                   np.s_[:, -width:])):
        if keep:
            out[strip] = True
    return out


def _body(small: np.ndarray, air: float, top: float) -> np.ndarray:
    """The body: the largest region brighter than air, closed by its convex hull."""
    bright = small > air + max(0.03, 0.08 * (top - air))
    # a strong opening detaches the scanner table and drops text; the convex hull
    # closes a chest wall that a narrow window shows only as broken speckle
    return _hull(_largest(_open(bright, 3)))


def _hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a mask, pixel for pixel ``skimage``'s ``convex_hull_image`` (hull
    of the pixels' edge midpoints, borders included), about 3x faster: the hull of a
    pixel set is that of each row's two end pixels, and a convex polygon crosses each row
    in one run, so it is filled row by row instead of testing every pixel against it."""
    rows = np.nonzero(mask.any(axis=1))[0]
    if not len(rows):
        return mask
    run = mask[rows]
    left = run.argmax(axis=1)
    right = mask.shape[1] - 1 - run[:, ::-1].argmax(axis=1)
    ends = np.concatenate([np.stack([rows, left], 1), np.stack([rows, right], 1)])
    # OpenCV's hull (exact on these integer and half-integer points; pixels on one line
    # give a segment, whose edge midpoints have area)
    corners = cv2.convexHull(ends.astype(np.int32)).reshape(-1, 2).astype(np.float64)
    edges = (corners[:, None, :] + _EDGE_MIDPOINTS).reshape(-1, 2).astype(np.float32)
    v = cv2.convexHull(edges).reshape(-1, 2).astype(np.float64)
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    eps = 1e-9
    r0 = max(int(np.ceil(y0.min() - eps)), 0)
    r1 = min(int(np.floor(y0.max() + eps)), mask.shape[0] - 1)
    ys = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    crosses = (ys >= np.minimum(y0, y1) - eps) & (ys <= np.maximum(y0, y1) + eps)
    flat = y1 == y0
    x = x0 + (ys - y0) / np.where(flat, 1.0, y1 - y0) * (x1 - x0)
    lo = np.where(crosses, np.where(flat, np.minimum(x0, x1), x), np.inf).min(axis=1)
    hi = np.where(crosses, np.where(flat, np.maximum(x0, x1), x), -np.inf).max(axis=1)
    cols = np.arange(mask.shape[1])
    out = np.zeros_like(mask)
    out[r0:r1 + 1] = ((cols >= np.ceil(lo - eps)[:, None]) & (cols <= np.floor(hi + eps)[:, None]))
    return out


_EDGE_MIDPOINTS = np.array([[0.0, 0.5], [0.0, -0.5], [0.5, 0.0], [-0.5, 0.0]])
"""Offsets from a pixel's centre to the midpoints of its edges (skimage's hull vertices)."""


def _inscribed_radius(labels: np.ndarray, k: int) -> float:
    """Largest distance from region ``k`` to its outside: the exact Euclidean distance
    transform (OpenCV's precise mask) on the region's bounding box plus a one-pixel ring
    of outside (the answer equals the whole image's, at a fraction of the cost)."""
    y0, x0, y1, x1 = bbox(labels == k)
    sub = np.pad(labels[y0:y1, x0:x1] == k, 1).astype(np.uint8)
    return float(cv2.distanceTransform(sub, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).max())


def _is_band(region: np.ndarray, body_box: tuple[int, int, int, int]) -> bool:
    y0, x0, y1, x1 = bbox(region)
    by0, bx0, by1, bx1 = body_box
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    posterior = (y0 + y1) / 2 > cy + 0.2 * (by1 - by0)
    return (x1 - x0) > 2.5 * (y1 - y0) and x0 < cx < x1 and posterior


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) of a mask's pixels, ends exclusive; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def standardise(gray: np.ndarray, lung_level: float, tissue_level: float) -> np.ndarray:
    """Map lung median -> ``LUNG_LEVEL`` and soft-tissue median -> ``TISSUE_LEVEL`` linearly.

    Two anchors every CT rendering shows, whatever its window: so a narrow
    window (black lungs) and a lung window (grey lungs) give the model the
    same grey levels for the same tissue.
    """
    span = max(tissue_level - lung_level, 0.05)
    out = LUNG_LEVEL + (gray - lung_level) * ((TISSUE_LEVEL - LUNG_LEVEL) / span)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def crop_box(gray: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """``gray[box]`` resized to ``size`` x ``size``; parts past the edge are black."""
    y0, x0, y1, x1 = box
    h, w = gray.shape
    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    out = img.transform((int(size), int(size)), Image.Transform.EXTENT, (x0, y0, x1, y1),
                        Image.Resampling.BILINEAR, fillcolor=0.0)
    return np.asarray(out, dtype=np.float32).copy()


def lung_view(gray: np.ndarray, size: int, seg: Segmentation | None = None) -> np.ndarray:
    """The model input of every lungct model with ``input_view: lungs``: (size, size) in [0, 1].

    The lung crop, black outside the body, rendering standardised.
    """
    g = _as_gray(gray)
    seg = seg or segment(g)
    body = crop_box(seg.mask("body").astype(np.float32), seg.box, size) > 0.5
    out = _smooth(crop_box(g, seg.box, size), SMOOTH * size / 224)
    out = standardise(out, seg.lung_level, seg.tissue_level)
    return np.where(body, out, 0.0).astype(np.float32)


def view_to_slice(view_map: np.ndarray, seg: Segmentation, mask_body: bool = True) -> np.ndarray:
    """A map over the lung view (e.g. a heatmap) put back on the slice's own pixels.

    The inverse of :func:`crop_box`: resized to the crop box, pasted where the
    box lies on the slice (what lay past the edge is dropped), zero outside the
    box and, with ``mask_body``, outside the chest (the lung fields' convex hull:
    lungs, the masses in them, hila, mediastinum): a heatmap on the chest wall, the
    table or the air beside the patient explains nothing.
    """
    h, w = seg.shape
    y0, x0, y1, x1 = seg.box
    bh, bw = max(1, y1 - y0), max(1, x1 - x0)
    big = np.asarray(Image.fromarray(np.ascontiguousarray(view_map, dtype=np.float32))
                     .resize((bw, bh), Image.Resampling.BILINEAR), dtype=np.float32)
    out = np.zeros((h, w), np.float32)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0:sy1, sx0:sx1] = big[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    if mask_body:
        out *= seg.mask("chest")
    return out
