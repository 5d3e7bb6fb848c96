"""Stage 1, decode: a read file (``SliceFile``) -> a ``SliceResult`` with its pixels.

A DICOM file was parsed once when it was read (``lungct.pipeline.series``);
its pixel data is decoded here once (``lungct.preprocess.dicom_pixels``) and
windowed twice when the user reads it in another window than the lung window
the guard and the findings judge. Its Hounsfield units stay with the slice for
the Study page's display windows. A raster file is decoded from its bytes,
and its colour is checked on the way.
"""

from __future__ import annotations

import numpy as np

from lungct.pipeline.series import SliceFile
from lungct.pipeline.slices import ACCEPTED_EXTENSIONS, ACCEPTED_HELP, SliceResult, failure_text
from lungct.preprocess import (MAX_PIXELS, InvalidImageError, decode_image, dicom_pixels,
                               render_dicom)

GUARD_WINDOW = "lung"
"""The window the guard sees DICOM slices in, whatever window the user reads them in: only a
lung window shows fat far brighter than lung, so only there can the body and lung check
tell lung fields from fat and bowel gas (in a mediastinal window both are dark and neck or
abdomen slices would pass as lung)."""


def pixel_spacing(ds) -> float | None:
    """The row spacing in mm of a DICOM dataset (PixelSpacing, else ImagerPixelSpacing)."""
    if ds is None:
        return None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = float(ds.get(key)[0])
        except (TypeError, ValueError, IndexError):
            continue
        if 0.05 <= value <= 5.0:
            return value
    return None


def guard_view(r: SliceResult) -> np.ndarray:
    """The rendering the guard, the segmentation and the findings judge: for a DICOM read in
    another window its lung-window twin, else the slice itself."""
    return r.guard_gray if r.guard_gray is not None else r.gray


def decode(sf: SliceFile, position: int, total: int, window: str = "lung",
           max_pixels: int = MAX_PIXELS, example: str | None = None,
           keep_hu: bool = True) -> SliceResult:
    """A ``SliceResult`` with the decoded slice, or with ``error``; never raises for bad input.
    ``keep_hu``: keep a CT slice's Hounsfield units for display (not in folder runs)."""
    ext = sf.extension
    r = SliceResult(position=position, total=total, example=example, name=sf.name,
                    extension=ext if ext in ACCEPTED_EXTENSIONS or not ext
                    else "unsupported extension",
                    is_dicom=sf.is_dicom, modality=sf.modality,
                    location_mm=sf.location, instance_number=sf.instance_number)
    try:
        if sf.error is not None:
            raise InvalidImageError(sf.error)
        if ext and ext not in ACCEPTED_EXTENSIONS:
            raise InvalidImageError(f"unsupported file type; use {ACCEPTED_HELP}")

        if sf.dataset is not None:   # pixel data decoded once, then windowed
            px = dicom_pixels(sf.dataset, max_pixels)
            r.gray = render_dicom(px, window)
            if window != GUARD_WINDOW:
                r.guard_gray = render_dicom(px, GUARD_WINDOW)
            if px.hu and keep_hu:
                r.hu = px.values.astype(np.float16)
            r.pixel_spacing_mm = pixel_spacing(sf.dataset)
        else:
            # only the extension is passed on as a hint: the name itself is never used
            r.gray = decode_image(sf.data or b"", name="upload" + ext, window=window,
                                  max_pixels=max_pixels)
            if sf.data:
                from lungct.guard import colour_verdict
                r.colour_picture = colour_verdict(sf.data)
        if r.modality and r.modality != "CT":
            r.warning = (f"DICOM modality is {r.modality}: the model was trained on CT "
                         "slices only; treat this result with extra caution.")
    except Exception as err:
        r.error, r.gray, r.guard_gray, r.hu = failure_text(err), None, None, None
    return r
