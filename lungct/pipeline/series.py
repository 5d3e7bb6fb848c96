"""A study from files: many DICOM files, folders or .zip archives -> series in anatomical order.

Each file is read once: its bytes, and for DICOM one parsed dataset
(``lungct.preprocess.read_dicom_safely``) from which the slice's place and the
series it belongs to are taken; the case pipeline (:mod:`lungct.pipeline`) turns
that same dataset into pixels. Slices are grouped by SeriesInstanceUID and
sorted along the slice normal (ImagePositionPatient projected on the cross
product of ImageOrientationPatient's row and column directions; InstanceNumber
when positions are missing); raster files (PNG, JPEG...) form one series in
natural file-name order ("slice2" before "slice10").

A broken or foreign file (a PDF, an SR, a truncated DICOM) is reported in
``Study.problems`` and the rest goes on. Limits on the number of files and
their total size (``series:`` in params.yaml) stop a folder or archive that is
not a study, with a message that says which limit and how to raise it.

Privacy: a ``SliceFile`` keeps the file name for the user's own screen only;
:meth:`Series.info` (what exports carry) holds modality, slice count,
thickness, spacing, kernel and orientation: nothing that names a patient.
"""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from lungct.errors import LungctError
from lungct.preprocess import InvalidImageError, dicom_dataset

DEFAULT_LIMITS = {"max_files": 2000, "max_total_mb": 1024}
RASTER_SERIES = "raster images"
SKIPPED_NAMES = ("__MACOSX/", ".DS_Store", "Thumbs.db", "DICOMDIR")
# Reconstruction kernels that are lung (sharp) kernels: the word LUNG (GE, many
# descriptions), Philips "L"/"YA"/"YB"..., Siemens B/I/Br/Bl 60 and above,
# Canon/Toshiba FC5x/FC8x.
_LUNG_KERNEL = re.compile(r"LUNG|^L$|^Y[A-D]$|^(B|I|BR|BL|HR)(6\d|7\d|8\d|9\d)|^FC(5\d|8\d)",
                          re.IGNORECASE)


class StudyLimitError(LungctError, ValueError):
    """Too many files or too many bytes for one study; the message says which limit."""


@dataclass
class SliceFile:
    """One input file, read once. ``name`` is for the user's own screen only."""

    name: str
    data: bytes | None = field(default=None, repr=False)
    dataset: object | None = field(default=None, repr=False)   # pydicom Dataset, DICOM only
    error: str | None = None
    is_dicom: bool = False
    modality: str | None = None
    series_uid: str | None = field(default=None, repr=False)
    study_uid: str | None = field(default=None, repr=False)
    description: str = field(default="", repr=False)
    kernel: str = ""
    thickness: float | None = None
    orientation: tuple[float, ...] | None = None
    image_position: tuple[float, ...] | None = None
    instance_number: int | None = None
    has_pixels: bool = True

    @property
    def extension(self) -> str:
        return os.path.splitext(os.path.basename(self.name))[1].lower()

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row x column direction), or None without a valid orientation."""
        if not self.orientation or len(self.orientation) != 6:
            return None
        n = np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 1e-6 else None

    @property
    def location(self) -> float | None:
        """Position along the slice normal in mm (None without position or orientation)."""
        n = self.normal
        if n is None or not self.image_position or len(self.image_position) != 3:
            return None
        return float(np.dot(np.asarray(self.image_position), n))


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: "2.png" < "10.png"."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _text(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def read_slice(name: str, data: bytes) -> SliceFile:
    """Read one file's bytes; DICOM is parsed once here. Never raises for bad content."""
    sf = SliceFile(name=name, data=data)
    if not data:
        sf.error = "empty file (0 bytes)"
        return sf
    try:
        ds = dicom_dataset(data)
    except InvalidImageError as err:   # a DICOM file that does not parse
        sf.is_dicom, sf.error = True, str(err)
        return sf
    if ds is None:
        return sf   # raster (or not an image: decoding says why)
    return slice_from_dataset(name, ds)


def slice_from_dataset(name: str, ds) -> SliceFile:
    """A ``SliceFile`` for a parsed DICOM dataset (a file, or an instance from a PACS)."""
    sf = SliceFile(name=name, dataset=ds, is_dicom=True)
    sf.modality = _text(ds.get("Modality")).upper() or None
    sf.series_uid = _text(ds.get("SeriesInstanceUID")) or None
    sf.study_uid = _text(ds.get("StudyInstanceUID")) or None
    sf.description = _text(ds.get("SeriesDescription"))
    sf.kernel = _text(ds.get("ConvolutionKernel"))
    thickness = _floats([ds.get("SliceThickness")], 1) if ds.get("SliceThickness") else None
    sf.thickness = thickness[0] if thickness else None
    sf.orientation = _floats(ds.get("ImageOrientationPatient") or (), 6)
    sf.image_position = _floats(ds.get("ImagePositionPatient") or (), 3)
    try:
        sf.instance_number = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") \
            is not None else None
    except (TypeError, ValueError):
        sf.instance_number = None
    sf.has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData",
                                          "DoubleFloatPixelData"))
    return sf


def is_axial(normal: np.ndarray | None) -> bool | None:
    """Whether the slice normal runs head-feet (within about 25 degrees); None if unknown."""
    return None if normal is None else bool(abs(float(normal[2])) >= 0.9)


def is_lung_kernel(kernel: str, description: str = "") -> bool:
    return bool(_LUNG_KERNEL.search(kernel.strip())) or "LUNG" in description.upper()


@dataclass
class Series:
    """Slices of one series in anatomical order (feet to head along the normal)."""

    key: str
    files: list[SliceFile]

    @property
    def size(self) -> int:
        return len(self.files)

    @property
    def ordering(self) -> str:
        """How the slices were ordered (stated in exports)."""
        first = self.files[0]
        if not first.is_dicom:
            return "natural file-name order"
        if all(f.location is not None for f in self.files):
            return "ImagePositionPatient along the slice normal"
        if all(f.instance_number is not None for f in self.files):
            return "InstanceNumber"
        return "file-name order (no position or instance number in the files)"

    @property
    def axial(self) -> bool | None:
        return is_axial(self.files[0].normal) if self.files[0].is_dicom else None

    @property
    def lung_kernel(self) -> bool:
        f = self.files[0]
        return is_lung_kernel(f.kernel, f.description)

    def spacing(self) -> float | None:
        """Median distance between neighbouring slices in mm (None without positions)."""
        locs = [f.location for f in self.files]
        if len(locs) < 2 or any(v is None for v in locs):
            return None
        return round(float(np.median(np.abs(np.diff(locs)))), 3)

    def info(self) -> dict:
        """What may be exported about the series: nothing that identifies a patient."""
        f = self.files[0]
        modalities = sorted({x.modality for x in self.files if x.modality})
        return {"modality": "/".join(modalities) or (None if f.is_dicom else "raster images"),
                "slices": self.size, "slice_thickness_mm": f.thickness,
                "spacing_mm": self.spacing(), "kernel": f.kernel or None,
                "lung_kernel": self.lung_kernel if f.is_dicom else None,
                "axial": self.axial, "ordering": self.ordering}

    def label(self) -> str:
        """A one-line description for the user's series picker (shown in session only)."""
        i = self.info()
        parts = [i["modality"] or "unknown modality", f"{i['slices']} slices"]
        if i["slice_thickness_mm"]:
            parts.append(f"{i['slice_thickness_mm']:g} mm")
        if i["kernel"]:
            parts.append(f"kernel {i['kernel']}" + (" (lung)" if i["lung_kernel"] else ""))
        if i["axial"] is False:
            parts.append("not axial")
        desc = self.files[0].description
        return (f"{desc}: " if desc else "") + ", ".join(parts)


def sort_slices(files: list[SliceFile]) -> list[SliceFile]:
    """Anatomical order: position along the normal, else InstanceNumber, else file name."""
    if files and all(f.location is not None for f in files):
        return sorted(files, key=lambda f: (f.location, f.instance_number or 0,
                                            natural_key(f.name)))
    if files and all(f.instance_number is not None for f in files):
        return sorted(files, key=lambda f: (f.instance_number, natural_key(f.name)))
    return sorted(files, key=lambda f: natural_key(f.name))


@dataclass
class Study:
    """The series found in the input, the files that could not be used, and why."""

    series: list[Series]
    problems: list[SliceFile]

    def default(self) -> Series | None:
        """The axial series with the most slices; among equals, one with a lung kernel."""
        if not self.series:
            return None
        return max(self.series, key=lambda s: (s.axial is not False, s.size, s.lung_kernel))

    def pick(self, choice: int | str | None = None) -> Series | None:
        """A series by index (0-based, as listed), by key, or the default one."""
        if choice is None:
            return self.default()
        if isinstance(choice, int):
            if not 0 <= choice < len(self.series):
                raise ValueError(f"series {choice} does not exist: the input has "
                                 f"{len(self.series)} series (0-{len(self.series) - 1})")
            return self.series[choice]
        for s in self.series:
            if s.key == choice:
                return s
        raise ValueError("no series with that SeriesInstanceUID in the input")


def group_series(files: Iterable[SliceFile]) -> Study:
    """Group readable image files by SeriesInstanceUID (raster files: one series)."""
    groups: dict[str, list[SliceFile]] = {}
    problems = []
    for f in files:
        if f.error is not None:
            problems.append(f)
        elif f.is_dicom and not f.has_pixels:
            f.error = "DICOM without pixel data (e.g. a report or presentation state)"
            problems.append(f)
        else:
            key = (f.series_uid or "DICOM without SeriesInstanceUID") if f.is_dicom \
                else RASTER_SERIES
            groups.setdefault(key, []).append(f)
    series = [Series(k, sort_slices(v)) for k, v in groups.items()]
    series.sort(key=lambda s: -s.size)
    return Study(series, problems)


# ------------------------------------------------------------------ input

def study_limits(cfg: dict | None = None) -> dict:
    if cfg is None:
        from lungct.config import load_config
        cfg = load_config()
    return {**DEFAULT_LIMITS, **(cfg.get("series") or {})}


class _Budget:
    """Counts files and bytes against the limits; raises StudyLimitError past them."""

    def __init__(self, limits: dict):
        self.max_files = int(limits["max_files"])
        self.max_bytes = int(float(limits["max_total_mb"]) * 2**20)
        self.files = self.bytes = 0

    def take(self, size: int) -> None:
        self.files += 1
        self.bytes += max(0, int(size))
        if self.files > self.max_files:
            raise StudyLimitError(
                f"more than {self.max_files} files: one study is expected (raise "
                "series.max_files in params.yaml for larger studies)")
        if self.bytes > self.max_bytes:
            raise StudyLimitError(
                f"more than {self.max_bytes / 2**20:.0f} MB in total: one study is expected "
                "(raise series.max_total_mb in params.yaml for larger studies)")


def _skipped(name: str) -> bool:
    base = os.path.basename(name.rstrip("/"))
    return (any(s in name for s in SKIPPED_NAMES[:1]) or base in SKIPPED_NAMES[1:]
            or base.startswith("._"))


def _from_zip(name: str, data: bytes, budget: _Budget) -> list[SliceFile]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir() and not _skipped(m.filename)]
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return [SliceFile(name=name, error=f"not a readable ZIP archive ({type(err).__name__})")]
    out = []
    for m in sorted(members, key=lambda m: natural_key(m.filename)):
        budget.take(m.file_size)    # declared sizes first: a zip bomb stops here
        member = f"{name}/{m.filename}"
        try:
            with archive.open(m) as fh:
                content = fh.read(m.file_size + 1)
        except Exception as err:   # encrypted, corrupt, unsupported compression
            out.append(SliceFile(name=member, error=f"cannot unpack this archive member "
                                                    f"({type(err).__name__})"))
            continue
        if len(content) > m.file_size:
            out.append(SliceFile(name=member, error="archive member larger than declared"))
            continue
        if content[:4] == b"PK\x03\x04":
            out.append(SliceFile(name=member, error="ZIP inside a ZIP: unpack it first"))
            continue
        out.append(read_slice(member, content))
    return out


def folder_files(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """The files under ``folder``, recursively, in natural name order ("IM2" before "IM10"),
    without system files (``SKIPPED_NAMES``, "._" resource forks); ``suffixes``: only files
    with one of these extensions or with none. The one folder walker (``case``, the Study
    upload, ``predict``)."""
    files = (p for p in folder.rglob("*") if p.is_file() and not _skipped(str(p.relative_to(folder)))
             and (suffixes is None or p.suffix.lower() in suffixes or not p.suffix))
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def read_inputs(items: Iterable, cfg: dict | None = None,
                limits: dict | None = None) -> list[SliceFile]:
    """Every slice file in ``items``: paths (files, folders, .zip) or ``(name, bytes)`` pairs.

    Folders are walked recursively in natural name order. Raises
    :class:`StudyLimitError` past ``series.max_files`` / ``series.max_total_mb``.
    """
    budget = _Budget(limits or study_limits(cfg))
    out: list[SliceFile] = []
    for item in items:
        if isinstance(item, tuple):
            out.extend(_counted(*item, budget))
            continue
        path = Path(item)
        if path.is_dir():
            for p in folder_files(path):
                out.extend(_read_path(p, budget))
        else:
            out.extend(_read_path(path, budget))
    return out


def _counted(name: str, data: bytes, budget: _Budget) -> list[SliceFile]:
    """One in-memory file (an upload): a ZIP is unpacked, anything else read as a slice."""
    if data[:4] == b"PK\x03\x04" or (name.lower().endswith(".zip") and data[:4] == b"PK\x05\x06"):
        return _from_zip(name, data, budget)
    budget.take(len(data))
    return [read_slice(name, data)]


def _read_path(path: Path, budget: _Budget) -> list[SliceFile]:
    try:
        size = path.stat().st_size
        if path.suffix.lower() == ".zip" or _zip_magic(path):
            if size > budget.max_bytes:
                budget.take(size)   # raises: the archive alone is over the size limit
            return _from_zip(str(path), path.read_bytes(), budget)
        budget.take(size)
        data = path.read_bytes()
    except FileNotFoundError:
        return [SliceFile(name=str(path), error="file not found")]
    except OSError as err:
        return [SliceFile(name=str(path), error=f"cannot read this file "
                                                f"({err.strerror or type(err).__name__})")]
    return [read_slice(str(path), data)]


def _zip_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def load_study(items: Iterable, cfg: dict | None = None, limits: dict | None = None) -> Study:
    """``group_series(read_inputs(items))``: the study in ``items``, its series in order."""
    return group_series(read_inputs(items, cfg, limits))
