"""Read the Lung-PET-CT-Dx layout: DICOM series folders plus Pascal VOC tumour boxes.

Li P et al., "A Large-Scale CT and PET/CT Dataset for Lung Cancer Diagnosis",
The Cancer Imaging Archive 2020, doi 10.7937/TCIA.2020.NNC2-0461 (CC BY 4.0).

Layout (as TCIA's downloads and the project's sample keep it)::

    ROOT/Lung_Dx-A0001-.../*.dcm        one folder per series
    ROOT/annotations/A0001/<SOPInstanceUID>.xml   one box file per annotated slice

Patient IDs carry the diagnosis: A adenocarcinoma, B small cell, E large
cell, G squamous cell carcinoma, all malignant. Used by the guard's fit, the
heatmap pointing game and ``python -m lungct lab external``. Nothing here keeps
patient tags: a slice is its series folder, index, position and pixels.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DIAGNOSIS = {"A": "adenocarcinoma", "B": "small cell carcinoma", "E": "large cell carcinoma",
             "G": "squamous cell carcinoma"}
_PATIENT = re.compile(r"([ABEG])(\d{4})")


@dataclass
class CTSlice:
    """One slice: Hounsfield units, where it sits, and its tumour boxes (x0, y0, x1, y1)."""

    series: str
    patient: str
    index: int
    """Position in anatomical order within the series (0 = lowest z)."""
    z: float
    hu: np.ndarray
    uid: str
    kernel: str = ""
    path: str = ""
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "malignant"


def patient_of(name: str) -> str:
    """"A0001" from a folder or file name; "" when there is none."""
    m = _PATIENT.search(name)
    return m.group(0) if m else ""


def read_boxes(root: str | Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """{SOPInstanceUID: [(x0, y0, x1, y1), ...]} from ``ROOT/annotations/*/*.xml``."""
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for xml in sorted(Path(root).glob("annotations/*/*.xml")):
        try:
            tree = ET.parse(xml)
        except ET.ParseError:
            continue
        for box in tree.iter("bndbox"):
            vals = [int(float(box.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax")]
            out.setdefault(xml.stem, []).append(tuple(vals))
    return out


def hounsfield(ds) -> np.ndarray:
    """Pixel data in HU (``lungct.preprocess.to_hu``), float32."""
    from lungct.preprocess import to_hu
    return to_hu(ds.pixel_array.astype(np.float64), ds).astype(np.float32)


def read_series(folder: str | Path, boxes: dict | None = None) -> list[CTSlice]:
    """The slices of one series folder in anatomical order (by ImagePositionPatient z)."""
    import pydicom

    folder = Path(folder)
    items = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pos = getattr(ds, "ImagePositionPatient", None)
        z = float(pos[2]) if pos is not None else float(getattr(ds, "InstanceNumber", 0))
        kernel = str(getattr(ds, "ConvolutionKernel", "") or "")
        uid = str(ds.SOPInstanceUID)
        items.append((z, uid, kernel, hounsfield(ds), str(path)))
    items.sort(key=lambda t: t[0])
    boxes = boxes or {}
    return [CTSlice(series=folder.name, patient=patient_of(folder.name), index=i, z=z, hu=hu,
                    uid=uid, kernel=kernel, path=path, boxes=list(boxes.get(uid, [])))
            for i, (z, uid, kernel, hu, path) in enumerate(items)]


def series_folders(root: str | Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir()
                  if p.is_dir() and p.name != "annotations" and any(p.glob("*.dcm")))


def read_all(root: str | Path, patients: set[str] | None = None) -> list[CTSlice]:
    """Every slice under ``root`` (optionally only some patients), series by series."""
    root = Path(root)
    if not root.is_dir():
        return []
    boxes = read_boxes(root)
    out: list[CTSlice] = []
    for folder in series_folders(root):
        if patients is None or patient_of(folder.name) in patients:
            out.extend(read_series(folder, boxes))
    return out


def is_layout(root: str | Path) -> bool:
    """Whether ``root`` looks like this layout (series folders of .dcm files)."""
    root = Path(root)
    return root.is_dir() and bool(series_folders(root))
