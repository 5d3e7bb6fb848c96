"""Synthetic solid masses painted into the lung fields of training slices.

Why: IQ-OTH/NCCD labels whole patients, so a "malignant" slice does not say
where the cancer is, and one hospital's slices let a model find its labels in
the export (darker renderings, framing) rather than in the lesion. Measured:
the default student's Grad-CAM pointed at Lung-PET-CT-Dx tumours on 4 of 38
slices, and it called that source's slices without a tumour malignant as often
as those with one. A lesion-level signal is missing, and none can be bought
here. Painting a mass into a lung field of a normal or benign slice and calling
the result malignant gives one: the only change between the two versions of
the same slice is the mass, so the model must look at the lung to tell them
apart. Lesion insertion is a common augmentation for CT lesion detection.

The mass takes the slice's own grey levels: the soft-tissue grey of that slice
(a narrow window's speckle, a lung window's smooth grey) and its pixel texture,
so it is no easier to spot than the slice's own soft tissue. Shapes are round
to lobulated, some spiculated, 6-25% of the side across (about 2-8 cm on a
chest crop), centred in a lung field, free to touch pleura and mediastinum as
real tumours do. Only training batches are painted; validation, test and every
evaluation see real slices only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


class LesionPainter:
    """With probability ``p``, paint one mass into slice ``i``'s lung fields; relabel it.

    ``masks``: (N, S, S) bool lung fields of the training slices in the model's
    view (``preprocess.view_mask``). Only slices labelled one of ``sources``
    are painted, and they take the label ``target`` (a ``target`` slice among the sources
    is painted and keeps its label: a mass then never tells which class a slice had).
    """

    def __init__(self, masks: np.ndarray, sources: tuple[int, ...], target: int,
                 p: float = 0.25, diameter=(0.06, 0.25), spicule_p: float = 0.5,
                 min_lung: float = 0.02):
        self.masks, self.sources, self.target = masks, tuple(sources), int(target)
        self.p, self.spicule_p, self.min_lung = float(p), float(spicule_p), float(min_lung)
        self.diameter = (float(diameter[0]), float(diameter[1]))
        if not 0 < self.diameter[0] <= self.diameter[1] < 1:
            raise ValueError(f"augment.lesion.diameter must be 0 < low <= high < 1, got {diameter}")

    def __call__(self, img: np.ndarray, i: int, label: int, lung: np.ndarray | None = None,
                 rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(img, label, None) unchanged, or (painted, relabelled, where the mass is).
        ``img``: (S, S) uint8; ``lung``: its lung fields when they are not ``masks[i]``
        (a re-rendered slice). The mass's mask (S x S bool) is what a localisation loss
        aims the class map at (``lungct.training.localise``)."""
        rng = rng or np.random.default_rng(np.random.randint(1 << 31))
        if label not in self.sources or rng.random() >= self.p:
            return img, label, None
        lung = self.masks[i] if lung is None else lung
        if lung.mean() < self.min_lung:      # no lung field to paint into
            return img, label, None
        painted = paint_mass(img, lung, rng, self.diameter, self.spicule_p, with_mask=True)
        return (img, label, None) if painted is None else (painted[0], self.target, painted[1])


def _tissue_grey(g: np.ndarray, lung: np.ndarray) -> tuple[float, float]:
    """The slice's soft-tissue grey and its pixel-level texture (std of the fine detail)."""
    lung_grey = float(np.median(g[lung]))
    tissue = (~lung) & (g > lung_grey + 0.1)
    tissue &= ndi.binary_dilation(lung, iterations=max(2, g.shape[0] // 16))  # near the lungs
    if tissue.sum() < 50:
        return 0.65, 0.03
    fine = (g - ndi.gaussian_filter(g, 2.0))[tissue]
    mad = 1.4826 * float(np.median(np.abs(fine - np.median(fine))))  # edges do not count
    return float(np.median(g[tissue])), mad


def paint_mass(img: np.ndarray, lung: np.ndarray, rng: np.random.Generator,
               diameter=(0.06, 0.25), spicule_p: float = 0.5,
               depth: float = 0.35, body: np.ndarray | None = None, with_mask: bool = False):
    """``img`` (uint8, S x S) with one solid mass centred in ``lung`` (bool, S x S), or
    None when there is no lung field (inside ``body``, when given) to paint into.
    ``with_mask``: (image, mask) instead, the mask (S x S bool) where the mass is opaque
    (blend weight at least one half).

    ``depth``: the centre lies at least this many radii inside the lung field (0.35: the
    mass may reach into pleura and mediastinum; about 1: it lies within the lung, the
    radius shrunk to fit where the field is narrow)."""
    side = img.shape[0]
    g = img.astype(np.float32) / 255
    if body is not None:   # never the air around the patient
        lung = lung & body
    if lung.sum() < 20:
        return None
    radius = rng.uniform(*diameter) * side / 2
    inside = ndi.distance_transform_edt(lung)
    if depth >= 0.8:   # the mass must fit in the lung field
        radius = min(radius, inside.max() / depth)
    ok = inside >= min(depth * radius, 0.6 * inside.max())
    ys, xs = np.nonzero(ok)
    k = rng.integers(len(ys))
    level, texture = _tissue_grey(g, lung)
    reach = int(np.ceil(radius * 2.0)) + 4          # the mass and its strands fit in here
    y0, x0 = max(0, ys[k] - reach), max(0, xs[k] - reach)
    y1, x1 = min(side, ys[k] + reach + 1), min(side, xs[k] + reach + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta, rho = np.arctan2(yy - ys[k], xx - xs[k]), np.hypot(yy - ys[k], xx - xs[k])
    edge = np.ones_like(theta)
    for f in range(2, 7):                    # lobulation: low-order wobble of the outline
        edge += rng.uniform(0, 0.25) / f * np.cos(f * theta + rng.uniform(0, 2 * np.pi))
    edge *= radius
    shape = rho <= edge
    if rng.random() < spicule_p:             # spiculation: thin strands into the lung
        for angle in rng.uniform(-np.pi, np.pi, rng.integers(4, 13)):
            d = np.angle(np.exp(1j * (theta - angle)))
            length = radius * rng.uniform(0.3, 0.9)
            shape |= (np.abs(d) * rho < 0.6 + 0.02 * radius) & (rho > edge * 0.8) & \
                     (rho < edge + length)
    alpha = np.clip(ndi.gaussian_filter(shape.astype(np.float32), rng.uniform(0.6, 1.6)), 0, 1)
    level *= rng.uniform(0.85, 1.05)
    noise = ndi.gaussian_filter(rng.standard_normal(shape.shape).astype(np.float32), 0.8)
    noise *= texture * rng.uniform(0.6, 1.1) / max(float(noise.std()), 1e-6)
    slow = ndi.gaussian_filter(rng.standard_normal(shape.shape).astype(np.float32), radius / 3)
    slow *= 0.04 / max(float(slow.std()), 1e-6)
    mass = np.clip(level + noise + slow, 0, 1)
    out = g.copy()
    out[y0:y1, x0:x1] = g[y0:y1, x0:x1] * (1 - alpha) + mass * alpha
    out = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
    if not with_mask:
        return out
    where = np.zeros(img.shape, bool)
    where[y0:y1, x0:x1] = alpha >= 0.5
    return out, where
