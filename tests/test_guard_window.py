"""The guard judges a DICOM slice in the lung window whatever window it is read in.

In a mediastinal window fat and lung are both dark, so an abdomen with fat would pass the
lung check; in the lung window fat is bright and only aerated lung is dark.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from test_lungs import _ellipse, chest_hu

from lungct.pipeline import GUARD_WINDOW, ClassifierBase, decode, iter_results
from lungct.data.demo_series import ct_dataset
from lungct.pipeline.series import read_slice


def _abdomen_hu(n: int = 256) -> np.ndarray:
    """Body, thick fat (-100 HU) in two large regions, no lung."""
    rng = np.random.default_rng(0)
    hu = np.full((n, n), -1000.0, np.float32)
    hu[_ellipse(n, n * 0.5, n * 0.5, n * 0.32, n * 0.44)] = 45
    hu[_ellipse(n, n * 0.47, n * 0.31, n * 0.16, n * 0.1)] = -100
    hu[_ellipse(n, n * 0.47, n * 0.69, n * 0.16, n * 0.1)] = -100
    hu[_ellipse(n, n * 0.72, n * 0.5, n * 0.05, n * 0.05)] = 700
    return hu + rng.normal(0, 10, hu.shape).astype(np.float32)


def _dicom(hu: np.ndarray) -> bytes:
    from pydicom.uid import generate_uid

    ds = ct_dataset("CT")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class LungCheckOnly:
    """The guard's anatomy rule alone (no learned score): accepted iff lung fields show."""

    def __init__(self):
        from lungct.guard import InputGuard
        self.real = InputGuard.load()
        self.seen = []

    def prepare(self, gray, data=None, seg=None):
        self.seen.append(gray)
        return self.real.prepare(gray, data, seg)

    def check_prepared(self, items, batch_size=32):
        from lungct.guard.model import Prepared
        return [self.real.verdict(0.0, None, p.lung_fraction) if isinstance(p, Prepared) else p
                for p in items]


class Always(ClassifierBase):
    def prepare(self, gray, seg=None):
        return np.zeros(1, np.float32)

    def predict_prepared(self, arrays):
        from lungct.inference import Prediction
        return [Prediction("normal", {"normal": 1.0, "benign": 0.0, "malignant": 0.0}, "t",
                           False, "torch") for _ in arrays]


@pytest.mark.parametrize("window", ["lung", "mediastinal", "file"])
def test_abdomen_is_outside_the_lungs_in_any_reading_window(window):
    files = [read_slice("abdomen.dcm", _dicom(_abdomen_hu())),
             read_slice("chest.dcm", _dicom(chest_hu()))]
    guard = LungCheckOnly()
    results = list(iter_results(Always(), files, 2, guard, window))
    assert [r.status for r in results] == ["outside_lungs", "classified"]
    assert all(r.guard_gray is None for r in results)        # freed after the batch


def test_the_reading_window_still_renders_what_the_model_and_user_see():
    sf = read_slice("abdomen.dcm", _dicom(_abdomen_hu()))
    lung = decode(sf, 1, 1, GUARD_WINDOW)
    sf = read_slice("abdomen.dcm", _dicom(_abdomen_hu()))
    med = decode(sf, 1, 1, "mediastinal")
    assert lung.guard_gray is None
    assert med.guard_gray is not None and np.allclose(med.guard_gray, lung.gray)
    assert not np.allclose(med.gray, lung.gray)
