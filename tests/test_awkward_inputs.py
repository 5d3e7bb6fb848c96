"""Awkward but valid encodings of a committed slice give the same answer as the plain file.

samples/malignant_1.jpg and samples/normal_1.jpg are re-encoded as 16-bit PNG, RGBA PNG,
CMYK JPEG, palette PNG (exact and 64-colour), TIFF, and as DICOM synthesised with pydicom
(grey mapped back to HU under the lung window, so windowing reproduces the image; a
MONOCHROME1 variant with inverted values; a uint16 variant without rescale tags read with
``window="file"``; a rescale-slope-2 variant). Each must give the same label and nearly the
same calibrated probabilities as the plain 8-bit file with the default shipped model, and
pass the OOD guard.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from dicom_factory import ct_dataset
from PIL import Image

from lungct import guard as ood
from lungct.config import REPO_ROOT, load_config
from lungct.models.checkpoint import MODELS_DIR, WEIGHTS_FILE, list_shipped
from lungct.preprocess import WINDOWS, decode_image

SAMPLES = ("malignant_1.jpg", "normal_1.jpg")
LUNG_W, LUNG_L = WINDOWS["lung"]


def _model_name() -> str | None:
    """The default model if its weights exist, else any shipped model with weights."""
    default = load_config()["app"]["default_model"]
    names = [n for n in list_shipped() if (MODELS_DIR / n / WEIGHTS_FILE).exists()]
    if default in names:
        return default
    return names[0] if names else None


@pytest.fixture(scope="module")
def classifier():
    name = _model_name()
    if name is None:
        pytest.skip("no trained model with weights in models/ yet (label equality with a "
                    "random model would mean nothing)")
    from lungct.inference import Classifier
    from lungct.models import load_model
    return Classifier(load_model(name))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def dicom_bytes(stored: np.ndarray, *, photometric="MONOCHROME2", rescale=(1.0, -1024.0),
                window=None, signed=True, bits=16) -> bytes:
    ds = ct_dataset()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowWidth, ds.WindowCenter = window
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def variants(name: str) -> dict[str, tuple[bytes, str, str, float]]:
    """{variant: (bytes, upload name, window, max abs probability difference)}."""
    u8 = np.asarray(Image.open(REPO_ROOT / "samples" / name).convert("L"))
    g = u8.astype(np.float64) / 255.0
    gray = Image.fromarray(u8)
    hu = g * LUNG_W + (LUNG_L - LUNG_W / 2)              # lung window inverse
    hu_inv = (1.0 - g) * LUNG_W + (LUNG_L - LUNG_W / 2)  # MONOCHROME1: display = 1 - window
    return {
        "png16": (encode(Image.fromarray(u8.astype(np.uint16) * 257), "PNG"), "a.png", "lung",
                  0.05),
        "rgba_png": (encode(Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 255)])),
                            "PNG"), "a.png", "lung", 0.05),
        "rgb_png": (encode(gray.convert("RGB"), "PNG"), "a.png", "lung", 0.05),
        "cmyk_jpeg": (encode(gray.convert("CMYK"), "JPEG", quality=95), "a.jpg", "lung", 0.12),
        "palette_png": (encode(gray.convert("P"), "PNG"), "a.png", "lung", 0.05),
        "palette_64_colours": (encode(gray.quantize(64), "PNG"), "a.png", "lung", 0.15),
        "tiff": (encode(gray, "TIFF"), "a.tif", "lung", 0.05),
        "tiff_deflate": (encode(gray, "TIFF", compression="tiff_adobe_deflate"), "a.tiff",
                         "lung", 0.05),
        "dicom_lung_window": (dicom_bytes(np.round(hu + 1024)), "a.dcm", "lung", 0.05),
        "dicom_monochrome1": (dicom_bytes(np.round(hu_inv + 1024), photometric="MONOCHROME1"),
                              "a.dcm", "lung", 0.05),
        "dicom_uint16_file_window": (dicom_bytes(np.round(g * 4095), rescale=None, signed=False,
                                                 bits=12, window=(4095.0, 2047.5)),
                                     "a.dcm", "file", 0.05),
        "dicom_slope_2": (dicom_bytes(np.round((hu + 2048) / 2), rescale=(2.0, -2048.0)),
                          "a.dcm", "lung", 0.05),
        "dicom_no_suffix": (dicom_bytes(np.round(hu + 1024)), "upload", "lung", 0.05),
    }


CASES = [(s, v) for s in SAMPLES for v in variants(s)]


@pytest.mark.parametrize("sample,variant", CASES)
def test_decoded_pixels_match_the_plain_file(sample, variant):
    ref = decode_image((REPO_ROOT / "samples" / sample).read_bytes(), name=sample)
    data, name, window, _ = variants(sample)[variant]
    out = decode_image(data, name=name, window=window)
    assert out.shape == ref.shape and out.dtype == np.float32
    lossy = variant in ("cmyk_jpeg", "palette_64_colours")
    assert np.abs(out - ref).mean() < (0.02 if lossy else 1e-3), np.abs(out - ref).mean()
    if not lossy:
        assert np.abs(out - ref).max() < 2e-3


@functools.lru_cache(maxsize=None)
def _reference(classifier, sample):
    return classifier.predict_bytes((REPO_ROOT / "samples" / sample).read_bytes(), name=sample)


@pytest.mark.parametrize("sample,variant", CASES)
def test_same_label_and_probabilities(sample, variant, classifier):
    ref = _reference(classifier, sample)
    data, name, window, tol = variants(sample)[variant]
    out = classifier.predict_bytes(data, name=name, window=window)
    diff = max(abs(out.probabilities[c] - ref.probabilities[c]) for c in ref.probabilities)
    assert diff < tol, (variant, ref.probabilities, out.probabilities)
    top2 = sorted(ref.probabilities.values())[-2:]
    if top2[1] - top2[0] > 2 * tol:  # a near tie may flip within the tolerance
        assert out.label == ref.label


@pytest.mark.parametrize("sample", SAMPLES)
def test_all_encodings_pass_the_guard(sample):
    if not (ood.guard_dir() / ood.WEIGHTS_FILE).exists():
        pytest.skip("no fitted OOD guard")
    guard = ood.InputGuard.load()
    items = variants(sample)
    grays = [decode_image(d, name=n, window=w) for d, n, w, _ in items.values()]
    verdicts = guard.check_many(grays)
    rejected = [k for k, v in zip(items, verdicts) if not v.in_distribution]
    assert not rejected, rejected
