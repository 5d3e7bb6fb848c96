"""Turn uploaded bytes (PNG/JPEG/BMP/TIFF/... or DICOM) into one gray CT slice.

Everything here is a small pure function, so training, the CLI and the app
decode images the same way. The contract of :func:`decode_image` is simple:
it returns a float32 2-D array in [0, 1], or it raises
:class:`InvalidImageError` with a reason a person can act on. It never lets a
Pillow/pydicom/numpy exception escape and never turns undecodable data into a
silent black image (a genuinely uniform image is returned as such; the
out-of-distribution guard elsewhere decides what to do with it).

Privacy: DICOM files carry patient data. Nothing here prints or logs tag
values, pydicom warnings (which can quote values) are silenced while reading,
and wrapped library messages are scrubbed of patient-identifying values.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from lungct.errors import LungctError

if TYPE_CHECKING:  # torch is only needed by to_tensor; decoding works without it
    import pydicom
    import torch

WINDOWS = {"lung": (1500.0, -600.0), "mediastinal": (350.0, 50.0)}
"""CT display windows as (width, level) in HU; "file" means the DICOM's own."""

MAX_PIXELS = 40_000_000
"""Decompression-bomb cap (about 6300x6300); a CT slice is 512x512."""

MIN_SIDE = 16
"""Smaller images cannot be a CT slice (icons, tracking pixels)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InvalidImageError(LungctError, ValueError):
    """The one error for input that is not a usable image; the message says why."""


# Magic numbers: raster formats go straight to Pillow, known non-images get a
# helpful message instead of "cannot identify image file".
_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                 b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")
_NON_IMAGE_MAGIC = (
    (b"PK\x03\x04", "looks like a ZIP archive (unpack it and upload single slices)"),
    (b"PK\x05\x06", "looks like an (empty) ZIP archive"),
    (b"%PDF", "looks like a PDF document"),
    (b"\x1f\x8b", "looks like a gzip-compressed file (unpack it first)"),
    (b"Rar!", "looks like a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "looks like a 7-Zip archive"),
)
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PATIENT_KEYWORDS = {"AccessionNumber", "InstitutionName", "InstitutionAddress",
                     "StudyID", "OtherPatientIDs", "ReferringPhysicianName"}


def _has_raster_magic(data: bytes) -> bool:
    return data.startswith(_RASTER_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _sniff_non_image(data: bytes) -> str | None:
    """Name obvious non-images (HTML error pages, archives, PDFs, text)."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        if b"<svg" in head:
            return "looks like an SVG vector drawing (export a PNG or JPEG instead)"
        if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head or b"<body" in head:
            return "looks like HTML (perhaps a web page or error page saved instead of the image)"
        return "looks like HTML/XML text"
    for magic, what in _NON_IMAGE_MAGIC:
        if data.startswith(magic):
            return what
    if data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "looks like a NIfTI volume (export single 2-D slices)"
    sample = data[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "looks like a text file"
    return None


def _short(exc: BaseException, limit: int = 200) -> str:
    """One-line, bounded exception text (no object reprs) for wrapping library errors."""
    text = re.sub(r"\s*<[^>]* object at 0x[0-9a-f]+>", "", str(exc))
    text = " ".join(text.split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------- DICOM

class _MuteWhileDecoding(logging.Filter):
    """Drops pydicom log records raised while *this thread* is inside _quiet_pydicom.

    pydicom logs and warns with element values ("Invalid value for VR PN:
    'Doe^Jane'"); an app that configures root logging would write them out.
    Thread-local, so other threads' pydicom logging is untouched.
    """

    state = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.state, "depth", 0)


_MUTE = _MuteWhileDecoding()
for _name in ("pydicom", "pydicom.pixels.utils", "pydicom.pixels.decoders.base"):
    logging.getLogger(_name).addFilter(_MUTE)


@contextmanager
def _quiet_pydicom():
    """No pydicom value validation, warnings or log records (all may quote patient data).

    Note: ``warnings.catch_warnings`` and pydicom's validation setting are
    process-global, as in any library that silences warnings.
    """
    from pydicom import config

    _MUTE.state.depth = getattr(_MUTE.state, "depth", 0) + 1
    try:
        with config.disable_value_validation(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _MUTE.state.depth -= 1


def read_dicom_safely(data: bytes) -> "pydicom.Dataset":
    """Parse DICOM bytes (with or without the 128-byte preamble); never raises pydicom errors.

    pydicom converts elements lazily, so a malformed value would otherwise
    fail (or warn, quoting the value) on first access somewhere else; walking
    the dataset here converts everything now, quietly, inside the try.
    """
    import pydicom

    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(BytesIO(data), force=True)
            ds.walk(lambda _ds, _elem: None)
            return ds
    except Exception as exc:  # pydicom raises many types on malformed input
        raise InvalidImageError(f"not a readable DICOM file ({type(exc).__name__})") from None


def _looks_like_dataset(ds) -> bool:
    return any(k in ds for k in ("SOPClassUID", "PixelData", "Modality"))


def is_dicom(data: bytes) -> bool:
    """True for DICOM Part-10 files ("DICM" at offset 128) and for bare datasets.

    Bare datasets (no preamble, as some old exporters write) are accepted only
    if pydicom parses them and they carry SOPClassUID, PixelData or Modality:
    random bytes sometimes "parse", but never produce those tags.
    """
    if data[128:132] == b"DICM":
        return True   # without parsing: the preamble says it
    return dicom_dataset(data) is not None


def dicom_dataset(data: bytes) -> "pydicom.Dataset | None":
    """The parsed dataset of DICOM bytes (as ``is_dicom`` tells them), else None; the one
    parse a file gets. ``InvalidImageError``: a Part-10 file ("DICM") that does not parse."""
    if data[128:132] == b"DICM":
        return read_dicom_safely(data)
    if len(data) < 8 or _has_raster_magic(data) or _sniff_non_image(data):
        return None
    try:
        ds = read_dicom_safely(data)
    except InvalidImageError:
        return None
    return ds if _looks_like_dataset(ds) else None


def dicom_modality(data: bytes) -> str | None:
    """The Modality tag ("CT", "MR", ...) or None if absent or not DICOM."""
    try:
        value = read_dicom_safely(data).get("Modality")
    except InvalidImageError:
        return None
    if value is None:
        return None
    return str(value).strip().upper() or None


def _scrub(text: str, ds) -> str:
    """Remove patient-identifying values (group 0010, person names, ...) from text."""
    secrets: set[str] = set()
    for elem in ds:
        if elem.tag.group == 0x0010 or elem.VR == "PN" or elem.keyword in _PATIENT_KEYWORDS:
            for part in re.split(r"[\^=\\]", str(elem.value)):
                if len(part.strip()) >= 3:
                    secrets.add(part.strip())
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def _known_uid_name(uid) -> str | None:
    """Dictionary name of a standard UID, else None.

    Only dictionary names go into messages: the raw value of a corrupt file
    can swallow neighbouring elements, patient name included.
    """
    from pydicom.uid import UID

    if not isinstance(uid, UID):
        return None
    try:
        name = uid.name
    except Exception:
        return None
    return name if name != str(uid) and uid.is_valid else None


def _first_float(value) -> float | None:
    """First value of a possibly multi-valued DS tag, or None if unusable."""
    try:
        if value is None:
            return None
        if not isinstance(value, (str, bytes, int, float)) and len(value):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if np.isfinite(number) else None


def hu_window(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """The one CT window: ``level - width/2`` -> 0, ``level + width/2`` -> 1, clipped, float32.

    Used for the model's input, the guard's lung view, the Study page's display
    presets and the synthetic renderings of training and tests. pydicom's
    ``apply_windowing`` is the DICOM VOI formula on a dataset's own tags, with
    its output in the stored bit range; a preset window on HU needs neither.
    """
    if not width > 0:
        raise ValueError("window width must be positive")
    return np.clip((np.asarray(values, dtype=np.float32) - (level - width / 2.0)) / width,
                   0.0, 1.0)


def to_hu(pixels: np.ndarray, ds) -> np.ndarray:
    """Stored pixel values -> modality values (Hounsfield units for CT), float64.

    pydicom's ``apply_modality_lut`` (Rescale Slope/Intercept, or a Modality
    LUT Sequence) where the tags are well formed; a file with an intercept but
    no usable slope (absent, zero or unreadable) gets slope 1, which is what
    scanners that write such files mean.
    """
    from pydicom.pixels import apply_modality_lut

    slope = _first_float(ds.get("RescaleSlope"))
    intercept = _first_float(ds.get("RescaleIntercept"))
    if ds.get("ModalityLUTSequence") or (slope not in (None, 0.0) and intercept is not None):
        try:
            return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        except (TypeError, ValueError, AttributeError):
            pass   # multi-valued or malformed tags: their first values, below
    return pixels * (1.0 if slope in (None, 0.0) else slope) + (intercept or 0.0)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1]; a uniform image becomes all zeros (it is still valid)."""
    lo, hi = float(values.min()), float(values.max())
    return np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)


def _file_window(ds) -> tuple[float, float] | None:
    width = _first_float(ds.get("WindowWidth"))
    level = _first_float(ds.get("WindowCenter"))
    return (width, level) if width is not None and width > 0 and level is not None else None


def decode_dicom(data: bytes, window: str = "lung", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one DICOM slice to float32 [0, 1].

    CT (or an unlabelled file with rescale tags): stored values -> HU via
    RescaleSlope/Intercept (1/0 when absent) -> the requested window ("file"
    uses the file's first WindowWidth/Center, falling back to lung). Other
    modalities have no HU, so they use the file window if present, else
    min-max; whether they are acceptable at all is the OOD guard's call.
    MONOCHROME1 (bright = low) is inverted after windowing.
    """
    _check_window(window)
    return render_dicom(dicom_pixels(read_dicom_safely(data), max_pixels), window)


@dataclass(frozen=True)
class DicomPixels:
    """A DICOM slice's pixels decoded once, before any window: a case renders the same
    slice in the user's window and in the guard's lung window, and the Study page
    shows it in display presets, all from these values."""

    values: np.ndarray = field(repr=False)
    """Hounsfield units for CT (``to_hu``); modality values otherwise; [0, 1] luma for a
    colour secondary capture."""
    hu: bool
    """``values`` are Hounsfield units (CT, or an unlabelled file with rescale tags)."""
    file_window: tuple[float, float] | None = None
    """The file's first (WindowWidth, WindowCenter), when valid."""
    monochrome1: bool = False
    """Bright means low: inverted after windowing."""
    colour: bool = False


def dicom_pixels(ds, max_pixels: int = MAX_PIXELS) -> DicomPixels:
    """Check a parsed DICOM slice and decode its pixel data once; ``InvalidImageError`` with
    the reason when it cannot be a slice (no pixels, multi-frame, palette, corrupt).
    Quietly: pydicom's warnings may quote patient data."""
    with _quiet_pydicom():
        return _dicom_pixels(ds, max_pixels)


def _dicom_pixels(ds, max_pixels: int) -> DicomPixels:
    if not _looks_like_dataset(ds) and "Rows" not in ds:
        raise InvalidImageError("not a readable DICOM file (no DICOM image tags found)")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = _known_uid_name(ds.get("SOPClassUID"))
        kind = f"SOP class: {sop}" if sop else "e.g. a structured report or presentation state"
        raise InvalidImageError(f"DICOM has no pixel data ({kind})")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except Exception:
        raise InvalidImageError("DICOM image is missing or has invalid Rows/Columns") from None
    _check_size(cols, rows, max_pixels)
    if frames > 1:
        raise InvalidImageError(f"multi-frame DICOM with {frames} frames: export single slices")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        raise InvalidImageError("PALETTE COLOR DICOM is not supported: export a grayscale slice")

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax_name = _known_uid_name(syntax)
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:
        reason = _scrub(_short(exc), ds)
        if syntax_name and syntax.is_transfer_syntax and syntax.is_compressed:
            raise InvalidImageError(
                "DICOM pixel data is compressed with a transfer syntax that cannot be decoded "
                f"here: {syntax_name} ({syntax}); reason: {reason}") from None
        raise InvalidImageError(f"corrupt DICOM pixel data: {reason}") from None

    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour secondary capture
        bits = int(ds.get("BitsStored") or 8)
        luma = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
        return DicomPixels(luma / float(2 ** bits - 1), hu=False, colour=True)
    if pixels.ndim != 2:
        raise InvalidImageError(f"DICOM pixel data has unexpected shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise InvalidImageError("DICOM pixel data contains NaN or infinite values")
    modality = str(ds.get("Modality") or "").strip().upper()
    is_ct = modality == "CT" or (not modality and "RescaleIntercept" in ds)
    return DicomPixels(to_hu(pixels, ds), hu=is_ct, file_window=_file_window(ds),
                       monochrome1=photometric == "MONOCHROME1")


def render_dicom(px: DicomPixels, window: str = "lung") -> np.ndarray:
    """[0, 1] float32 slice of decoded DICOM pixels in ``window``.

    CT: HU in the named window ("file": the file's own, else lung). Other
    modalities have no HU: the file's window if present, else min-max; whether
    they are acceptable at all is the guard's call. MONOCHROME1 is inverted
    after windowing.
    """
    _check_window(window)
    if px.colour:
        return _finish(px.values)
    if px.hu:
        width, level = (px.file_window or WINDOWS["lung"]) if window == "file" else WINDOWS[window]
        gray = hu_window(px.values, width, level)
    else:
        gray = hu_window(px.values, *px.file_window) if px.file_window else _min_max(px.values)
    return _finish(1.0 - gray if px.monochrome1 else gray)


# -------------------------------------------------------------------- raster

def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels exceeds the limit "
            f"of {max_pixels:,} (decompression-bomb guard)")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImageError(
            f"image too small: {width}x{height} (need at least {MIN_SIDE}x{MIN_SIDE} pixels)")


def _raster_to_gray(img: Image.Image) -> np.ndarray:
    """Pixels of a loaded image as float [0, 1], by mode.

    Integer modes are scaled by their dtype range (a 16-bit PNG /65535, so it
    matches its 8-bit twin within 1/255). Alpha is dropped, not composited:
    the colour under a transparent pixel is kept (for a black background the
    two are identical). Float images already in [0, 1] are kept, others are
    min-max stretched because float has no standard range.
    """
    mode = img.mode
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16S, I (int32)
        arr = np.asarray(img)
        if arr.dtype.kind == "u":
            return arr / float(np.iinfo(arr.dtype).max)
        if arr.min() >= 0 and arr.max() <= 65535:  # 16-bit data in a 32-bit container
            return arr / 65535.0
        return _min_max(arr.astype(np.float64))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise InvalidImageError("image contains NaN or infinite values")
        return arr if arr.min() >= 0.0 and arr.max() <= 1.0 else _min_max(arr)
    if mode in ("1", "L", "P", "RGB"):
        img = img.convert("L")
    elif mode in ("LA", "La", "PA"):
        img = img.convert("RGBA").convert("L")
    else:  # RGBA, RGBa, CMYK, YCbCr, ...: via RGB
        try:
            img = img.convert("RGB").convert("L")
        except Exception:
            raise InvalidImageError(f"unsupported colour mode {mode!r}") from None
    # float32 from the start: the output contract is float32, and a float64 detour
    # (convert, clip, cast back) cost a 512x512 slice 1.5 ms of its ~3 ms decode
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)


def decode_raster(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF/GIF/WebP/... with Pillow to float32 [0, 1].

    The size is checked from the header before any pixel is decoded, and the
    full decode is forced inside try so truncated files fail here rather than
    later (LOAD_TRUNCATED_IMAGES is deliberately left off: a half-grey slice
    would be classified as if it were real).
    """
    if not data:
        raise InvalidImageError("empty file (0 bytes)")
    what = _sniff_non_image(data) if not _has_raster_magic(data) else None
    if what:
        raise InvalidImageError(f"not an image: {what}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(BytesIO(data))
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "the image"
        raise InvalidImageError(f"image too large: {count} exceeds the limit of {max_pixels:,} "
                                "(decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise InvalidImageError("not an image: unrecognised or unsupported file format "
                                "(supported: PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM)") from None
    except Exception as exc:
        raise InvalidImageError(f"unreadable image header: {_short(exc)}") from None

    with img:
        fmt = img.format or "image"
        width, height = img.size
        _check_size(width, height, max_pixels)
        try:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise InvalidImageError(f"animated image with {frames} frames: upload a single slice")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
                gray = _raster_to_gray(img)
        except InvalidImageError:
            raise
        except Exception as exc:
            raise InvalidImageError(f"truncated or corrupt {fmt}: {_short(exc)}") from None
    return _finish(gray)


# ---------------------------------------------------------------- dispatcher

def _check_window(window: str) -> None:
    if window != "file" and window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: use one of {sorted(WINDOWS) + ['file']}")


def _finish(gray: np.ndarray) -> np.ndarray:
    """The output contract: float32, C-contiguous, 2-D, finite, in [0, 1]."""
    gray = np.ascontiguousarray(np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0))
    if gray.ndim != 2 or not np.isfinite(gray).all():
        raise InvalidImageError("decoded image is not a finite 2-D grayscale array")
    return gray


def decode_image(data: bytes, name: str = "", window: str = "lung",
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any supported upload to a float32 (H, W) array in [0, 1].

    ``name`` is only a hint (a ".dcm" name makes DICOM errors DICOM-specific);
    content decides. Order: DICOM preamble, raster magic, known non-images,
    bare DICOM dataset, then let Pillow try.
    """
    _check_window(window)
    if not data:
        raise InvalidImageError("empty file (0 bytes)")
    if data[128:132] == b"DICM":
        return decode_dicom(data, window, max_pixels)
    if _has_raster_magic(data):
        return decode_raster(data, max_pixels)
    if name.lower().endswith(_DICOM_SUFFIXES) and not _sniff_non_image(data):
        return decode_dicom(data, window, max_pixels)
    if is_dicom(data):
        return decode_dicom(data, window, max_pixels)
    return decode_raster(data, max_pixels)


def load_image(path: str | os.PathLike, window: str = "lung",
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a file and decode it; file errors name only the basename."""
    base = os.path.basename(os.fspath(path))
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InvalidImageError(f"file not found: {base}") from None
    except IsADirectoryError:
        raise InvalidImageError(f"not a file but a directory: {base}") from None
    except OSError as exc:
        raise InvalidImageError(f"cannot read file {base}: {exc.strerror or type(exc).__name__}") from None
    return decode_image(data, name=base, window=window, max_pixels=max_pixels)


# ----------------------------------------------------------- model input

def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """Plain square bilinear resize of a float image (no aspect keeping, as in training).

    Done in Pillow's float mode so no 8-bit quantisation happens here.
    """
    arr = np.asarray(gray)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError("grayscale array must be numeric and finite (no NaN/inf)")
    if int(size) < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))  # mode "F"
    resized = img.resize((int(size), int(size)), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).copy()


VIEWS = ("full", "lungs")
"""What a model sees of a slice: the whole image squashed to a square (the first
release), or the lung fields cropped and the rendering standardised
(``lungct.lungs.lung_view``). Each model card names its view."""


def model_view(gray: np.ndarray, size: int, view: str = "full", seg=None) -> np.ndarray:
    """The (size, size) [0, 1] image a model with ``view`` sees: the one door for training,
    evaluation, the CLI, the app, the guard and the heatmaps. ``seg``: the slice's
    ``lungct.lungs.Segmentation`` when made already (the lung view reuses it)."""
    if view == "full":
        return resize_gray(gray, size)
    if view == "lungs":
        from lungct.lungs import lung_view
        return lung_view(gray, size, seg)
    raise ValueError(f"unknown model view {view!r}: use one of {VIEWS}")


def view_mask(seg, size: int, view: str = "full", which: str = "lungs") -> np.ndarray:
    """``seg.mask(which)`` (a ``lungct.lungs.Segmentation``) in the coordinates of
    :func:`model_view`'s image: (size, size) bool. Training paints lesions into it."""
    mask = seg.mask(which).astype(np.float32)
    if view == "full":
        return resize_gray(mask, size) > 0.5
    if view == "lungs":
        from lungct.lungs import crop_box
        return crop_box(mask, seg.box, size) > 0.5
    raise ValueError(f"unknown model view {view!r}: use one of {VIEWS}")


def model_input(gray: np.ndarray, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                view: str = "full", seg=None) -> np.ndarray:
    """The one model input: the view (``model_view``: square bilinear resize, or the lung
    crop given the slice's segmentation ``seg``), grey replicated to 3 channels,
    ``(v - mean) / std`` per channel; (3, size, size) float32, C-contiguous.

    Three identical channels let ImageNet-pretrained backbones be reused as is. ONNX
    Runtime, PyTorch (``to_tensor``), the guard's extractor and training all use it.
    """
    small = model_view(gray, size, view, seg)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((small[None, :, :] - m) / s, dtype=np.float32)


def to_tensor(gray: np.ndarray, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
              view: str = "full") -> "torch.Tensor":
    """``model_input`` as a torch tensor."""
    import torch

    return torch.from_numpy(model_input(gray, size, mean, std, view))
