"""The anatomical check: is there a body, and are there lung fields in it?

An explainable signal beside the learned score: ``lungct.lungs.segment``
finds the body outline and the lung fields classically, so the guard can say
"no body outline" (a photo, a document, a blank frame) or "outside the
lungs" (a CT slice of the neck or abdomen) in words a radiologist checks at
a glance. Its two limits live in the guard card and params.yaml ``ood``.
"""

from __future__ import annotations

import numpy as np

from lungct.lungs import MIN_LUNG_FRACTION

MIN_BODY = 0.05
"""Body area / image area below which no body outline was found."""
MIN_LUNG = MIN_LUNG_FRACTION
"""Lung area / body area below which a CT slice shows no lung (the default; ``python -m
lungct.guard fit`` chooses the limit on validation slices and the card records it)."""


def hu_body(hu: np.ndarray, level: float = -400.0) -> np.ndarray:
    """The body in Hounsfield units alone: the largest region above ``level``, holes filled."""
    from scipy import ndimage as ndi

    hu = np.asarray(hu, dtype=np.float32)
    tissue = hu > level
    labels, n = ndi.label(tissue)
    if not n:
        return tissue
    sizes = ndi.sum(tissue, labels, index=np.arange(1, n + 1))
    return ndi.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def hu_shows_lung(hu: np.ndarray, level: float = -400.0, min_part: float = 0.02) -> bool:
    """Reference for DICOM slices, from Hounsfield units alone (independent of any rendering):
    air below ``level`` inside the filled body outline (``hu_body``) covers over ``min_part``
    of the image.

    Rough by design (trachea and bowel gas count too): it is the yardstick the data's
    README uses for "shows lung", not the guard's own rule.
    """
    hu = np.asarray(hu, dtype=np.float32)
    return bool(((hu < level) & hu_body(hu, level)).mean() > min_part)
