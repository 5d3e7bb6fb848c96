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
