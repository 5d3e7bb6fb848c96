"""Find the images of a dataset folder and their labels.

Two layouts are recognised, both with one folder per class:
- IQ-OTH/NCCD as users download it: ``Bengin cases`` (the dataset's own
  spelling), ``Malignant cases``, ``Normal cases``;
- a generic layout with folders named normal / benign / malignant, any case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lungct import CLASSES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"}

# Folder name (lower-cased, trailing " cases"/" case" removed) -> class label.
_FOLDER_ALIASES = {"normal": "normal", "benign": "benign", "bengin": "benign",
                   "malignant": "malignant"}


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: its path relative to the root, label and scan number."""

    path: str
    label: str
    number: int | None

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.label)


def folder_label(name: str) -> str | None:
    """Map a class folder name to a label, or None if it is not a class folder.

    >>> folder_label("Bengin cases"), folder_label("MALIGNANT"), folder_label("misc")
    ('benign', 'malignant', None)
    """
    key = re.sub(r"\s+cases?$", "", name.strip().lower())
    return _FOLDER_ALIASES.get(key)


def file_number(name: str) -> int | None:
    """The scan-order number in a file name such as ``Normal case (134).jpg``."""
    found = re.findall(r"(\d+)", Path(name).stem)
    return int(found[-1]) if found else None


def discover(root: str | Path) -> list[ImageRecord]:
    """List every image under the class folders of ``root``, sorted by class then number.

    Raises FileNotFoundError naming what was expected when the folder is missing
    or holds no class folders, so a user who has not downloaded the data learns
    what to put where.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist: download IQ-OTH/NCCD "
            "(Mendeley Data, doi 10.17632/bhmdr45bh2) and unpack it there, "
            "or set LUNGCT_DATA to its folder")
    records: list[ImageRecord] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = folder_label(folder.name)
        if label is None:
            continue
        for file in folder.rglob("*"):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                records.append(ImageRecord(file.relative_to(root).as_posix(), label,
                                           file_number(file.name)))
    if not records:
        raise FileNotFoundError(
            f"no class folders with images under {root}: expected folders such as "
            "'Normal cases', 'Bengin cases', 'Malignant cases' (or normal/benign/malignant)")
    records.sort(key=lambda r: (CLASSES.index(r.label),
                                r.number if r.number is not None else -1, r.path))
    return records
