"""The skeleton of a synthetic CT image DICOM, shared by the tests that build one.

Each test module fills in pixels, rescale and whatever tags it is testing;
the file meta and SOP identity are the same everywhere.
"""

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_dataset(modality: str | None = "CT") -> Dataset:
    """An empty CT Image Storage dataset with file meta (Explicit VR Little Endian)."""
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


def ct_series(n: int = 8, *, size: int = 64, modality: str = "CT", kernel: str = "B70f",
              thickness: float = 5.0, z0: float = -300.0, study_uid: str | None = None,
              series_uid: str | None = None, phi: dict | None = None,
              orientation=(1, 0, 0, 0, 1, 0), image=None, description: str = "CHEST",
              instance_numbers: bool = True, positions: bool = True) -> list[bytes]:
    """A synthetic series of ``n`` slices in anatomical order (z0, z0 + thickness, ...).

    Pixels: ``image`` (a [0, 1] grey array, resized to ``size``) rendered to HU
    in the lung window, with a slice-dependent brightness so slices differ; a
    disc phantom otherwise. ``phi``: patient tags to carry (for privacy tests).
    """
    import numpy as np
    from PIL import Image

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    if image is None:
        yy, xx = np.mgrid[:size, :size]
        image = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2, 0.2, 0.6)
    base = np.asarray(Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
                      .resize((size, size)), dtype=np.float64) / 255.0
    out = []
    for i in range(n):
        ds = ct_dataset(modality)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription, ds.ConvolutionKernel = description, kernel
        ds.SliceThickness = thickness
        if instance_numbers:
            ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = list(orientation)
        if positions:
            ds.ImagePositionPatient = [-160.0, -160.0, z0 + i * thickness]
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
        import io
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out
