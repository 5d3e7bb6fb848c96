"""One upload as a case: per-slice results, the case verdict and the CSV.

Privacy: a file is referred to only by its position in the upload and its
extension ("file 3 of 7 (.dcm)"). Neither its name nor any DICOM tag is kept,
so nothing built from a ``SliceResult`` (table, CSV, report) can carry them.
Example slices shipped with the repository keep their names: they are public.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lungct import CLASSES
from lungct.preprocess import InvalidImageError, decode_image, dicom_modality, is_dicom

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
ACCEPTED_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
ACCEPTED_HELP = ("PNG, JPEG, TIFF, BMP or DICOM (.dcm, or DICOM files without an extension, "
                 "as scanners export them)")

MALIGNANT_THRESHOLD = 0.5
CASE_RULE = (f"malignant if any slice has P(malignant) >= {MALIGNANT_THRESHOLD:.2f}; "
             "otherwise benign if any slice is labelled benign (or malignant below that "
             "threshold); otherwise normal")


@dataclass
class SliceResult:
    """What the app knows about one uploaded file (never its name or tags)."""

    position: int                 # 1-based place in the upload
    total: int
    extension: str                # ".jpg", ".dcm" or "" (no extension)
    is_dicom: bool = False
    example: str | None = None    # sample file name, for shipped examples only
    gray: np.ndarray | None = None
    prediction: object | None = None   # lungct.inference.Prediction
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.prediction is not None

    @property
    def title(self) -> str:
        kind = self.extension or ("DICOM, no extension" if self.is_dicom else "no extension")
        text = f"File {self.position} of {self.total} ({kind})"
        return f"{text}: example {self.example}" if self.example else text

    @property
    def malignant_probability(self) -> float:
        return float(self.prediction.probabilities.get("malignant", 0.0)) if self.ok else -1.0


def file_extension(name: str) -> str:
    """Lower-case extension of an upload's name, "" when it has none."""
    return os.path.splitext(os.path.basename(name or ""))[1].lower()


def check_extension(name: str) -> str:
    """The accepted extension of ``name`` ("" for none); InvalidImageError otherwise.

    The unknown extension is not echoed: it is part of a name we do not show.
    """
    ext = file_extension(name)
    if ext and ext not in ACCEPTED_EXTENSIONS:
        raise InvalidImageError(f"unsupported file type; upload {ACCEPTED_HELP}")
    return ext


def analyse_file(classifier, data: bytes, name: str, position: int, total: int,
                 window: str = "lung", max_pixels: int | None = None,
                 example: str | None = None) -> SliceResult:
    """Decode and classify one file; every failure becomes ``error`` text, never an exception."""
    ext = file_extension(name)
    # an unknown "extension" is part of a name we do not show (e.g. "scan.Doe^Jane")
    shown = ext if ext in ACCEPTED_EXTENSIONS or not ext else "unsupported extension"
    result = SliceResult(position=position, total=total, extension=shown, example=example)
    try:
        check_extension(name)
        result.is_dicom = is_dicom(data)
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        # only the extension is passed on as a hint: the name itself is never used
        result.gray = decode_image(data, name="upload" + ext, window=window,
                                   **kwargs)
        if result.is_dicom:
            modality = dicom_modality(data)
            if modality and modality != "CT":
                result.warning = (f"DICOM modality is {modality}: the model was trained on "
                                  "CT slices only; treat this result with extra caution.")
        result.prediction = classifier.predict_gray(result.gray)
    except InvalidImageError as err:
        result.error = str(err)
        result.gray = None
    except Exception as err:  # the page must go on with the other files
        result.error = (f"could not process this file ({type(err).__name__}); "
                        "the other files are unaffected")
        result.gray = None
        result.prediction = None
    return result


def analyse_files(classifier, files: list[tuple[str, bytes]], window: str = "lung",
                  max_pixels: int | None = None,
                  examples: bool = False) -> list[SliceResult]:
    """``analyse_file`` over an upload; ``examples`` keeps the (public) sample names."""
    total = len(files)
    return [analyse_file(classifier, data, name, i, total, window, max_pixels,
                         example=os.path.basename(name) if examples else None)
            for i, (name, data) in enumerate(files, start=1)]


def most_suspicious_first(results: list[SliceResult]) -> list[SliceResult]:
    """Valid slices by descending P(malignant), then the failed files in upload order."""
    good = sorted((r for r in results if r.ok), key=lambda r: -r.malignant_probability)
    return good + [r for r in results if not r.ok]


def case_verdict(results: list[SliceResult],
                 threshold: float = MALIGNANT_THRESHOLD) -> dict | None:
    """The case-level label under ``CASE_RULE``; None when no slice could be read.

    Returns {"label", "rule", "deciding_slice" (title), "n_slices", "unsure"}; the
    case is unsure when any slice is unsure or a malignant label fell below threshold.
    """
    good = [r for r in results if r.ok]
    if not good:
        return None
    top = max(good, key=lambda r: r.malignant_probability)
    if top.malignant_probability >= threshold:
        label, deciding = "malignant", top
    else:
        abnormal = [r for r in good if r.prediction.label in ("benign", "malignant")]
        if abnormal:
            label = "benign"
            deciding = max(abnormal, key=lambda r: r.prediction.probabilities["benign"]
                           + r.malignant_probability)
        else:
            label, deciding = "normal", top
    unsure = any(r.prediction.unsure for r in good) or any(
        r.prediction.label == "malignant" and r.malignant_probability < threshold for r in good)
    rule = CASE_RULE if threshold == MALIGNANT_THRESHOLD else CASE_RULE.replace(
        f"{MALIGNANT_THRESHOLD:.2f}", f"{threshold:.2f}")
    return {"label": label, "rule": rule, "deciding_slice": deciding.title,
            "n_slices": len(good), "n_failed": len(results) - len(good), "unsure": unsure}


def case_table(results: list[SliceResult]) -> pd.DataFrame:
    """One row per file, most suspicious first; failed files keep their error text."""
    rows = []
    for rank, r in enumerate(most_suspicious_first(results), start=1):
        row = {"rank": rank if r.ok else None, "file": r.title}
        if r.ok:
            p = r.prediction.probabilities
            row.update({"label": r.prediction.label, "unsure": bool(r.prediction.unsure),
                        **{f"p_{c}": round(float(p.get(c, 0.0)), 4) for c in CLASSES},
                        "status": "ok" if not r.warning else r.warning})
        else:
            row.update({"label": None, "unsure": None, **{f"p_{c}": None for c in CLASSES},
                        "status": f"error: {r.error}"})
        rows.append(row)
    columns = ["rank", "file", "label", "unsure", *[f"p_{c}" for c in CLASSES], "status"]
    return pd.DataFrame(rows, columns=columns)


def case_csv(results: list[SliceResult], model_name: str = "") -> bytes:
    """The case table as UTF-8 CSV (with a model column when ``model_name`` is given)."""
    table = case_table(results)
    if model_name:
        table.insert(len(table.columns), "model", model_name)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
