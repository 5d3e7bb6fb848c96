"""The anatomical check: is there a body, and are there lung fields in it?

An explainable signal beside the learned score: ``lungct.lungs.segment``
finds the body outline and the lung fields classically, so the guard can say
"no body outline" (a photo, a document, a blank frame) or "outside the
lungs" (a CT slice of the neck or abdomen) in words a radiologist checks at
a glance. Its two limits live in the guard card and params.yaml ``ood``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungct.lungs import Segmentation, segment

MIN_BODY = 0.05
"""Body area / image area below which no body outline was found."""
MIN_LUNG = 0.03
"""Lung area / body area below which a CT slice shows no lung (chosen on validation
slices by ``python -m lungct.guard fit``; the card records the value)."""


@dataclass(frozen=True)
class Anatomy:
    body_fraction: float
    lung_fraction: float
    n_lungs: int

    def body_found(self, min_body: float = MIN_BODY) -> bool:
        return self.body_fraction >= min_body

    def lungs_found(self, min_lung: float = MIN_LUNG) -> bool:
        return self.lung_fraction >= min_lung


def anatomy(seg: Segmentation) -> Anatomy:
    return Anatomy(seg.body_fraction, seg.lung_fraction, seg.n_lungs)


def check_anatomy(gray: np.ndarray) -> tuple[Anatomy, Segmentation]:
    seg = segment(gray)
    return anatomy(seg), seg


def hu_shows_lung(hu: np.ndarray, level: float = -400.0, min_part: float = 0.02) -> bool:
    """Reference for DICOM slices, from Hounsfield units alone (independent of any rendering):
    air below ``level`` inside the filled body outline covers over ``min_part`` of the image.

    Rough by design (trachea and bowel gas count too): it is the yardstick the data's
    README uses for "shows lung", not the guard's own rule.
    """
    from scipy import ndimage as ndi

    hu = np.asarray(hu, dtype=np.float32)
    tissue = hu > level
    labels, n = ndi.label(tissue)
    if not n:
        return False
    sizes = ndi.sum(tissue, labels, index=np.arange(1, n + 1))
    body = ndi.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    return bool(((hu < level) & body).mean() > min_part)
