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
from lungct.preprocess import (WINDOWS, InvalidImageError, decode_image, dicom_modality,
                               is_dicom)

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
ACCEPTED_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
ACCEPTED_HELP = ("PNG, JPEG, TIFF, BMP or DICOM (.dcm, or DICOM files without an extension, "
                 "as scanners export them)")

WINDOW_CHOICES = (*WINDOWS, "file")
WINDOW_HELP = ("Applied to DICOM files before the model: lung (W1500/L-600), mediastinal "
               "(W350/L50) or the file's own window.")

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
    rejected: bool = False        # the OOD guard says: not a lung CT slice
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


def predict(classifier, gray: np.ndarray):
    """``classifier.predict_gray`` under the model's CAM lock.

    While another session computes a heatmap, the shared model carries
    pytorch-grad-cam hooks that record every forward pass; a classification
    running at that moment would feed its activations into that heatmap.
    """
    if getattr(classifier, "backend", "torch") != "torch":
        return classifier.predict_gray(gray)   # an ONNX session carries no hooks
    model = getattr(classifier, "model", None)
    if model is None:
        return classifier.predict_gray(gray)
    from lungct.explain import model_lock
    with model_lock(model):
        return classifier.predict_gray(gray)


def decode_file(data: bytes, name: str, position: int, total: int, window: str = "lung",
                max_pixels: int | None = None, example: str | None = None) -> SliceResult:
    """Decode one upload; a failure becomes ``error`` text, never an exception."""
    ext = file_extension(name)
    # an unknown "extension" is part of a name we do not show (e.g. "scan.Doe^Jane")
    shown = ext if ext in ACCEPTED_EXTENSIONS or not ext else "unsupported extension"
    result = SliceResult(position=position, total=total, extension=shown, example=example)
    try:
        check_extension(name)
        result.is_dicom = is_dicom(data)
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        # only the extension is passed on as a hint: the name itself is never used
        result.gray = decode_image(data, name="upload" + ext, window=window, **kwargs)
        if result.is_dicom:
            modality = dicom_modality(data)
            if modality and modality != "CT":
                result.warning = (f"DICOM modality is {modality}: the model was trained on "
                                  "CT slices only; treat this result with extra caution.")
    except Exception as err:
        _fail(result, err)
    return result


def _fail(result: SliceResult, err: Exception) -> None:
    if isinstance(err, InvalidImageError):
        result.error = str(err)
    else:  # the page must go on with the other files; the message may quote data
        result.error = (f"could not process this file ({type(err).__name__}); "
                        "the other files are unaffected")
    result.gray, result.prediction = None, None


def screen(guard, results: list[SliceResult], datas: list[bytes]) -> None:
    """Mark decoded slices the out-of-distribution guard rejects (``lungct.ood``).

    DICOM files of a non-CT modality are rejected by their tag; the pixels of
    the others are checked in one batch. If the guard itself fails, no class
    is shown: a tool that cannot tell a lung CT from a photo must not guess.
    """
    from lungct.ood import modality_verdict

    todo = []
    for r, data in zip(results, datas):
        if r.gray is None:
            continue
        verdict = modality_verdict(dicom_modality(data)) if r.is_dicom else None
        if verdict is not None:
            r.error, r.rejected, r.warning = verdict.reason, True, None
        else:
            todo.append(r)
    if not todo:
        return
    try:
        verdicts = guard.check_many([r.gray for r in todo])
    except Exception as err:
        for r in todo:
            r.error, r.rejected = (f"the input check (is this a lung CT slice?) failed "
                                   f"({type(err).__name__}): no classification shown"), True
        return
    for r, verdict in zip(todo, verdicts):
        if not verdict.in_distribution:
            r.error, r.rejected = verdict.reason, True


def rejection(guard, data: bytes, gray: np.ndarray) -> str | None:
    """The guard's reason for refusing one decoded file, or None (also without a guard)."""
    if guard is None:
        return None
    result = SliceResult(1, 1, "", is_dicom=is_dicom(data), gray=gray)
    screen(guard, [result], [data])
    return result.error if result.rejected else None


def analyse_files(classifier, files: list[tuple[str, bytes]], window: str = "lung",
                  max_pixels: int | None = None, examples: bool = False,
                  guard=None) -> list[SliceResult]:
    """Decode, screen (with an ``OODGuard``, if given) and classify every file of an upload.

    ``examples`` keeps the (public) sample names. Each file's failure stays its own.
    """
    total = len(files)
    results = [decode_file(data, name, i, total, window, max_pixels,
                           example=os.path.basename(name) if examples else None)
               for i, (name, data) in enumerate(files, start=1)]
    if guard is not None:
        screen(guard, results, [data for _, data in files])
    for r in results:
        if r.gray is not None and r.error is None:
            try:
                r.prediction = predict(classifier, r.gray)
            except Exception as err:
                _fail(r, err)
    return results


def analyse_file(classifier, data: bytes, name: str, position: int = 1, total: int = 1,
                 window: str = "lung", max_pixels: int | None = None,
                 guard=None) -> SliceResult:
    """``analyse_files`` for a single file at ``position`` of ``total``."""
    result = analyse_files(classifier, [(name, data)], window, max_pixels, guard=guard)[0]
    result.position, result.total = position, total
    return result


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
                        "status": r.error if r.rejected else f"error: {r.error}"})
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
