"""The guard's verdict: which of four cases holds for one input, and why.

A radiologist needs to know *why* nothing was classified: the file is not a
usable image, it is an image but not a CT slice, or it is a CT slice that
shows no lung (neck, upper abdomen: "outside the lungs", which is neither an
error nor "normal"). Only "accepted" slices get a class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lungct.preprocess import InvalidImageError, resize_gray

ACCEPTED, NOT_IMAGE, NOT_CT, OUTSIDE_LUNGS = "accepted", "not_image", "not_ct", "outside_lungs"
STATUSES = (ACCEPTED, NOT_IMAGE, NOT_CT, OUTSIDE_LUNGS)
REJECTED = "not a lung CT slice: no classification"
OUTSIDE = ("outside the lungs: no lung fields in this slice (a CT slice of the neck or abdomen, "
           "or not a chest CT at all); no classification")

# Modalities that are certainly not a CT slice (DICOM tag 0008,0060). OT/SC
# (secondary capture, screenshots) and missing tags are left to the pixels.
NON_CT_MODALITIES = {
    "MR": "magnetic resonance", "US": "ultrasound", "MG": "mammography",
    "CR": "computed radiography (X-ray)", "DX": "digital radiography (X-ray)",
    "RF": "fluoroscopy", "XA": "X-ray angiography", "IO": "intra-oral X-ray",
    "PX": "panoramic X-ray", "NM": "nuclear medicine", "PT": "PET", "ES": "endoscopy",
    "XC": "external camera photo", "OP": "ophthalmic photo", "SM": "slide microscopy",
    "GM": "general microscopy", "ECG": "ECG", "SR": "structured report", "DOC": "document",
    "OPT": "ophthalmic tomography", "BMD": "bone densitometry", "DG": "diaphanography",
}




@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one slice.

    ``status`` is one of ``STATUSES``; ``score`` is the learned
    out-of-distribution score (``threshold`` its limit), ``lung_fraction``
    the lung area / body area of the anatomical check (None when it did not
    run). ``in_distribution`` is True only for "accepted".
    """

    in_distribution: bool
    score: float
    threshold: float
    reason: str
    status: str = ""
    lung_fraction: float | None = None
    rendering_score: float | None = None
    """How far the whole slice's rendering and framing lie from the training exports
    (``lungct.guard.caution``); above ``rendering_limit`` the answer carries a caution.
    None when the guard has no caution score or did not score the slice."""
    rendering_limit: float | None = None

    def __post_init__(self):
        if not self.status:
            object.__setattr__(self, "status", ACCEPTED if self.in_distribution else NOT_CT)

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    def as_dict(self) -> dict:
        out = asdict(self)
        out["score"] = None if not math.isfinite(self.score) else round(self.score, 4)
        out["threshold"] = round(self.threshold, 4)
        if self.lung_fraction is not None:
            out["lung_fraction"] = round(self.lung_fraction, 4)
        for key in ("rendering_score", "rendering_limit"):
            value = getattr(self, key)
            if value is None or not math.isfinite(value):
                out.pop(key)
            else:
                out[key] = round(value, 4)
        return out


class OutOfDistribution(InvalidImageError):
    """Raised by :meth:`OODGuard.require`: the input is not a lung CT slice; ``.verdict`` says why.

    A subclass of ``InvalidImageError``, so every existing error path (CLI
    error lines, the app's error box) handles it without a new branch, and
    no class can be shown for it.
    """

    def __init__(self, verdict: "Verdict"):
        super().__init__(verdict.reason)
        self.verdict = verdict




def as_gray(gray) -> np.ndarray:
    """Validate a decoded slice: 2-D, numeric, finite -> float32 in [0, 1] (clipped)."""
    arr = np.asarray(gray)
    if arr.ndim != 2 or min(arr.shape, default=0) < 1:
        raise ValueError(f"expected a non-empty 2-D grayscale array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if arr.dtype == np.float32:
        lo, hi = float(arr.min()), float(arr.max())   # NaN fails both tests below
        if 0.0 <= lo and hi <= 1.0:   # a decoded slice, checked again: nothing to copy
            return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError("grayscale array must be numeric and finite (no NaN/inf)")
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)


def spread(gray: np.ndarray) -> float:
    """Standard deviation of the slice at 64 px (cheap, resolution independent)."""
    small = resize_gray(as_gray(gray), 64) if max(np.shape(gray)) > 64 else as_gray(gray)
    return float(np.std(small))


TWO_TONE_SHARE = 0.985
"""Share of pixels in the two fullest of 16 grey bins from which an image is two-tone."""
MAX_MASK_SPECKLE = 0.002
"""Share of pixels that differ from their 3x3 neighbourhood's majority (at 256 px), below
which a two-tone image is flat: a mask or a drawing rather than a CT slice."""


def two_tone(gray: np.ndarray) -> bool:
    """Whether the image is a flat two-tone picture: a segmentation mask, a drawing or a
    binary pattern, never a CT slice.

    Grey levels alone do not tell: IQ-OTH/NCCD's narrow-window exports reach 0.969 of
    pixels in two of 16 bins, and the same slices with their contrast stretched
    (``phantoms.other_source_variants``, "contrast") 0.99, like a mask. What a CT slice
    keeps in any window is its noise: single pixels that break from their neighbours
    (at least 0.55% of them in those stretched slices, 0.31% in the plain ones); a mask
    PNG has 0.002%, and under 0.02% after JPEG at quality 40. A body mask with black
    lungs passed the learned score and the anatomical check before this rule.
    """
    g = as_gray(gray)
    sub = g[::2, ::2]
    counts = np.bincount(np.minimum((sub * 16).astype(np.int64), 15).ravel(), minlength=16)
    if np.sort(counts)[-2:].sum() < TWO_TONE_SHARE * counts.sum():
        return False
    from scipy import ndimage as ndi
    small = resize_gray(g, 256) if max(g.shape) > 256 else g
    on = (small > 0.5).astype(np.uint8)
    return bool((on != ndi.median_filter(on, 3)).mean() < MAX_MASK_SPECKLE)


COLOUR_CHROMA = 0.1
"""Chroma (max - min of R, G, B, in [0, 1]) from which a pixel is coloured: JPEG's chroma
subsampling leaves a grey slice under 0.03."""
COLOUR_SHARE = 0.05
"""Share of coloured pixels from which an image is a colour picture: a viewer screenshot's
coloured marks and text stay below it, a photo or a heatmap overlay lies above."""


def colour_photo(data: bytes) -> bool:
    """Whether a raster file is a colour picture (a photo, a heatmap overlay), never a CT slice.

    Decoding makes every upload grey (``lungct.preprocess._raster_to_gray``), so the
    chroma is gone by the time the guard sees the pixels; only the file's bytes still
    hold it. This reads them without a second full decode: the header alone says the
    mode, so grey files (CT exports, 16-bit PNG) cost nothing more; a colour JPEG is
    read at 1/8 scale (``Image.draft``: libjpeg keeps the DC coefficients only); only
    other colour formats (PNG, WebP) are decoded again, reduced at once. Grey pixels in
    an RGB container (most screenshots) have no chroma and pass.
    """
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as img:
            if img.mode not in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr"):
                return False
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.thumbnail((128, 128), Image.Resampling.NEAREST)
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception:  # undecodable here: the decoder has had its say already
        return False
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return bool((chroma > COLOUR_CHROMA).mean() >= COLOUR_SHARE)


def colour_verdict(data: bytes | None, threshold: float = 1.0) -> Verdict | None:
    """A rejection for a raster file that is a colour picture (``colour_photo``), else None."""
    if data is None or not colour_photo(data):
        return None
    return Verdict(False, math.nan, threshold, f"{REJECTED} (a colour picture: CT slices are grey)",
                   NOT_CT)


def modality_verdict(modality: str | None, threshold: float = 1.0) -> Verdict | None:
    """A rejection for DICOM modalities that are never a CT slice, else None.

    Use with :func:`lungct.preprocess.dicom_modality`; CT, OT/SC (secondary
    captures) and files without the tag go on to the pixel check.
    """
    code = (modality or "").strip().upper()
    if code in NON_CT_MODALITIES:
        return Verdict(False, math.inf, threshold,
                       f"{REJECTED} (DICOM modality {code}: {NON_CT_MODALITIES[code]}, not CT)",
                       NOT_CT)
    return None
