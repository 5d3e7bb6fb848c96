"""The slice object every stage of the pipeline fills in, and what a slice may be.

A ``SliceResult`` is made by the decode stage and carries what each later stage
needs and makes: the decoded pixels, the segmentation, the prepared inputs, the
guard's verdict, the prediction, the findings and the caution. Nothing is
decoded or segmented twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungct import CLASSES
from lungct.preprocess import InvalidImageError

STATUSES = ("classified", "outside_lungs", "refused", "error")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
ACCEPTED_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
ACCEPTED_HELP = ("PNG, JPEG, TIFF, BMP, GIF, WebP or DICOM (.dcm, or DICOM files without an extension, "
                 "as scanners export them)")



def failure_text(err: Exception) -> str:
    """What a user is told about a failure: an ``InvalidImageError``'s own words, else only
    the exception's type (its message may quote data)."""
    if isinstance(err, InvalidImageError):
        return str(err)
    return f"could not process this file ({type(err).__name__}); the other files are unaffected"


@dataclass
class SliceResult:
    """One slice of a case. ``name`` is shown to its user only; exports use ``position``."""

    position: int                 # 1-based place in the case (anatomical order for a series)
    total: int
    extension: str = ""           # ".jpg", ".dcm" or "" (no extension)
    is_dicom: bool = False
    example: str | None = None    # sample file name, for shipped examples only
    gray: np.ndarray | None = field(default=None, repr=False)
    prediction: object | None = None   # lungct.inference.Prediction
    error: str | None = None
    rejected: bool = False        # the guard refused it (not a lung CT slice)
    outside_lungs: bool = False   # CT, but outside the lungs (neck, abdomen)
    warning: str | None = None
    modality: str | None = None
    location_mm: float | None = None   # position along the slice normal
    instance_number: int | None = None
    guard: dict | None = None     # the guard's verdict (as_dict), when it ran
    name: str | None = field(default=None, repr=False)   # session display only
    guard_gray: np.ndarray | None = field(default=None, repr=False)
    """A DICOM slice in the lung window, when ``gray`` is in another: what the guard judges."""
    hu: np.ndarray | None = field(default=None, repr=False)
    """A CT DICOM slice's Hounsfield units (float16: display windows only), kept with the
    pixels; None for raster files and other modalities."""
    seg: object | None = field(default=None, repr=False)
    """The slice's one ``lungct.lungs.Segmentation`` (of the rendering the guard judges; the
    same pixel grid as ``gray``), made by the segment stage and used by the guard, a
    lung-view model, the findings, the heatmaps and the lung outline; kept with the pixels."""
    guard_input: object | None = field(default=None, repr=False)
    """The guard's per-slice work done ahead (``SliceGuard.prepare``), by the segment stage."""
    model_input: np.ndarray | None = field(default=None, repr=False)
    """The classifier's input made ahead (``SliceClassifier.prepare``), by the segment stage."""
    colour_picture: object | None = field(default=None, repr=False)
    """The guard's refusal of a raster file that is a colour picture (decoding made it grey;
    only the file's bytes held the colour), found while decoding."""
    pixel_spacing_mm: float | None = None
    """Row spacing in mm (DICOM PixelSpacing); None for 8-bit images."""
    findings: list | None = None
    """``lungct.findings.Finding`` objects, best first, for an accepted slice when the findings
    stage ran (``[]``: none found); None when it did not run."""
    finding_score: float | None = None
    """The top candidate's score (0 without candidates), above the threshold or not, when the
    findings stage ran: ``suspicion`` weighs P(malignant) by it."""
    lung_window: bool | None = None
    """Whether the model sees a rendering whose lungs show grey (a lung window), when the
    guard's segmentation told (``Segmentation.grey_lungs``); see ``rendering_caution``."""
    caution: str | None = None
    """Why this slice's answer must be read with caution (``slice_caution``), or None; when
    set, the answer is flagged unsure and the text is also in ``warning``."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.prediction is not None

    @property
    def status(self) -> str:
        if self.ok:
            return "classified"
        if self.outside_lungs:
            return "outside_lungs"
        return "refused" if self.rejected else "error"

    @property
    def title(self) -> str:
        kind = self.extension or ("DICOM, no extension" if self.is_dicom else "no extension")
        text = f"File {self.position} of {self.total} ({kind})"
        return f"{text}: example {self.example}" if self.example else text

    @property
    def where(self) -> str:
        """The slice's place without its name: "slice 12 of 64 (z = -154.5 mm)"."""
        text = f"slice {self.position} of {self.total}"
        return text + (f" (z = {self.location_mm:.1f} mm)" if self.location_mm is not None
                       else "")

    @property
    def malignant_probability(self) -> float:
        return float(self.prediction.probabilities.get("malignant", 0.0)) if self.ok else -1.0

    def as_dict(self) -> dict:
        """The exportable record: position, status and result; never a name or a tag."""
        out = {"index": self.position, "location_mm": None if self.location_mm is None
               else round(self.location_mm, 3), "instance_number": self.instance_number,
               "status": self.status}
        if self.ok:
            p = self.prediction
            out.update(label=p.label, unsure=bool(p.unsure),
                       probabilities={c: round(float(p.probabilities.get(c, 0.0)), 6)
                                      for c in CLASSES})
        else:
            out["reason"] = self.error
        if self.findings is not None:
            out["findings"] = [f.as_dict() for f in self.findings]
            out["finding_score"] = round(float(self.finding_score or 0.0), 4)
        if self.guard is not None:
            out["guard_score"] = self.guard.get("score")
            if self.guard.get("rendering_score") is not None:
                out["rendering_score"] = self.guard["rendering_score"]
        if self.caution:
            out["caution"] = self.caution
        if self.warning:
            out["warning"] = self.warning
        return out
