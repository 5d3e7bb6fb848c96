"""A synthetic CT series for demos (``make pacs`` without the shared data) and tests.

Slices are the shipped public sample images (``samples/``; credit in its
README) rendered to Hounsfield units in the lung window, with positions,
orientation, kernel and thickness as a scanner writes them. No real patient:
patient tags are added only when asked (``phi``), for privacy tests.
"""

from __future__ import annotations

import io

import numpy as np


def _disc(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2, 0.2, 0.6)


def ct_dataset(modality: str | None = "CT"):
    """An empty CT Image Storage dataset with file meta (Explicit VR Little Endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality:
        ds.Modality = modality
    return ds


def synthetic_series(n: int = 8, *, size: int = 64, modality: str = "CT", kernel: str = "B70f",
                     thickness: float = 5.0, z0: float = -300.0, study_uid: str | None = None,
                     series_uid: str | None = None, phi: dict | None = None,
                     orientation=(1, 0, 0, 0, 1, 0), image=None, description: str = "CHEST",
                     instance_numbers: bool = True, positions: bool = True) -> list[bytes]:
    """``n`` DICOM Part-10 files (bytes) of one series, in anatomical order (z0, z0 + thickness...).

    Pixels: ``image`` (a [0, 1] grey array, resized to ``size``) rendered to
    HU in the lung window, slightly brighter slice by slice so slices differ;
    a disc phantom when ``image`` is None.
    """
    from PIL import Image
    from pydicom.uid import generate_uid

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    image = _disc(size) if image is None else image
    base = np.asarray(Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
                      .resize((size, size)), dtype=np.float64) / 255.0
    out = []
    for i in range(n):
        ds = ct_dataset(modality)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesNumber, ds.StudyID = 1, "1"
        ds.SeriesDescription, ds.ConvolutionKernel = description, kernel
        ds.SliceThickness = thickness
        if instance_numbers:
            ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = list(orientation)
        if positions:
            ds.ImagePositionPatient = [-160.0, -160.0, z0 + i * thickness]
        ds.PixelSpacing = [320.0 / size, 320.0 / size]
        for key, value in (phi or {}).items():
            setattr(ds, key, value)
        hu = np.clip(base * (0.9 + 0.2 * i / max(1, n - 1)), 0, 1) * 1500.0 - 1350.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def demo_series(n: int = 12, size: int = 256) -> list[bytes]:
    """A demo series from the shipped sample slices (public images), one study."""
    from PIL import Image

    from lungct.config import REPO_ROOT

    samples = sorted((REPO_ROOT / "samples").glob("*.jpg"))
    img = np.asarray(Image.open(samples[0]).convert("L"), dtype=np.float64) / 255.0
    return synthetic_series(n, size=size, image=img, description="lungct demo (synthetic)",
                            phi={"PatientName": "DEMO^SYNTHETIC", "PatientID": "LUNGCT-DEMO"})
