"""Tests for lungct.preprocess: everything synthesised here, no dataset needed."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pydicom
import pytest
from dicom_factory import ct_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from lungct.preprocess import (
    MAX_PIXELS,
    InvalidImageError,
    decode_dicom,
    decode_image,
    decode_raster,
    dicom_modality,
    is_dicom,
    load_image,
    resize_gray,
    to_tensor,
)

JPEG2000 = "1.2.840.10008.1.2.4.90"


# ------------------------------------------------------------------ helpers

def synthetic_slice(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth gradient with a bright disc: uint8, like a windowed CT slice."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = 40 + 120 * xx / (w - 1) + 40 * yy / (h - 1)
    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2] = 235
    return img.round().astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 1-bit pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))


def make_dicom(hu: np.ndarray | None = None, *, slope=1.0, intercept=-1024.0,
               photometric="MONOCHROME2", modality="CT", pixel_data=True,
               rescale=True, window=None, preamble=True, **tags) -> bytes:
    """A CT image DICOM whose stored values map to ``hu`` via slope/intercept."""
    if hu is None:
        hu = np.linspace(-1350, 150, 32 * 32).reshape(32, 32)
    ds = ct_dataset(modality)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = (hu - intercept) / slope
    else:
        stored = hu
    if window:
        ds.WindowWidth, ds.WindowCenter = window
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixel_data:
        ds.PixelData = np.round(stored).astype("<i2").tobytes()
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(buf, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def small(arr: np.ndarray) -> np.ndarray:
    return resize_gray(arr, 64)


# ------------------------------------------------------------------ rasters

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_gray_round_trip(fmt):
    ref = synthetic_slice()
    out = decode_image(encode(Image.fromarray(ref), fmt))
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    tol = 0.02 if fmt == "JPEG" else 1e-6
    assert np.abs(out - ref / 255.0).mean() < tol


def _variants() -> dict[str, tuple[bytes, float]]:
    ref = synthetic_slice()
    gray = Image.fromarray(ref)
    rgba = np.dstack([ref, ref, ref, np.full_like(ref, 255)])
    return {
        "png16": (encode(Image.fromarray(ref.astype(np.uint16) * 257), "PNG"), 0.005),
        "tiff16": (encode(Image.fromarray(ref.astype(np.uint16) * 257), "TIFF"), 0.005),
        "rgb": (encode(gray.convert("RGB"), "PNG"), 0.005),
        "rgba": (encode(Image.fromarray(rgba), "PNG"), 0.005),
        "palette": (encode(gray.convert("P"), "PNG"), 0.02),
        "cmyk_jpeg": (encode(gray.convert("CMYK"), "JPEG", quality=95), 0.03),
        "tiff": (encode(gray, "TIFF"), 0.005),
        "bilevel": (encode(gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"), None),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_modes_match_8bit(name):
    data, tol = _variants()[name]
    ref = small(decode_image(encode(Image.fromarray(synthetic_slice()), "PNG")))
    out = decode_image(data)
    assert out.dtype == np.float32 and out.shape == (96, 128)
    if tol is not None:
        assert np.abs(small(out) - ref).mean() < tol
    else:  # 1-bit: only black and white
        assert set(np.unique(out)) <= {0.0, 1.0}


def test_16bit_png_within_one_grey_level():
    ref = synthetic_slice()
    out16 = decode_image(encode(Image.fromarray(ref.astype(np.uint16) * 257), "PNG"))
    assert np.abs(out16 - ref / 255.0).max() <= 1 / 255


def test_float_tiff_is_min_max_stretched():
    arr = np.linspace(-5, 5, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = decode_image(encode(Image.fromarray(arr), "TIFF"))
    assert out.min() == 0.0 and out.max() == 1.0


def _truncated(fmt: str) -> bytes:
    data = encode(Image.fromarray(synthetic_slice(256, 256)), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, words", [
    (b"", ["empty"]),
    (_truncated("PNG"), ["truncated", "corrupt"]),
    (_truncated("JPEG"), ["truncated", "corrupt"]),
    (b"<!DOCTYPE html><html><body>404 not found</body></html>", ["html"]),
    (b"\n  <html><head></head></html>", ["html"]),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", ["pdf"]),
    (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), ["not an image"]),
    (bomb_png(20000, 20000), ["too large", "decompression"]),
    (bomb_png(7000, 7000), ["too large", "7000x7000"]),
    (encode(Image.new("L", (1, 1)), "PNG"), ["too small", "1x1"]),
    (encode(Image.new("L", (15, 200)), "PNG"), ["too small"]),
])
def test_bad_inputs(data, words):
    with pytest.raises(InvalidImageError) as info:
        decode_image(data)
    message = str(info.value).lower()
    assert any(w.lower() in message for w in words), message


def test_zip_archive():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("slice.png", encode(Image.fromarray(synthetic_slice()), "PNG"))
    with pytest.raises(InvalidImageError, match="ZIP"):
        decode_image(buf.getvalue(), name="slice.png")


def test_animated_gif():
    frames = [Image.fromarray(synthetic_slice()), Image.fromarray(255 - synthetic_slice())]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="animated image with 2 frames"):
        decode_image(data)


def test_single_frame_gif_is_fine():
    out = decode_image(encode(Image.fromarray(synthetic_slice()), "GIF"))
    assert out.shape == (96, 128)


def test_bomb_rejected_before_decoding():
    # A real decode of 400 MPixel would take seconds and gigabytes; the header check does not.
    with pytest.raises(InvalidImageError, match="decompression-bomb"):
        decode_raster(bomb_png(20000, 20000), MAX_PIXELS)


def test_unknown_window_is_a_caller_error():
    with pytest.raises(ValueError, match="unknown window"):
        decode_image(encode(Image.fromarray(synthetic_slice()), "PNG"), window="bone")


def test_load_image(tmp_path):
    path = tmp_path / "slice.png"
    path.write_bytes(encode(Image.fromarray(synthetic_slice()), "PNG"))
    assert load_image(path).shape == (96, 128)
    with pytest.raises(InvalidImageError) as info:
        load_image(tmp_path / "secret-dir" / "missing.png")
    assert "missing.png" in str(info.value) and "secret-dir" not in str(info.value)
    with pytest.raises(InvalidImageError):
        load_image(tmp_path)


# -------------------------------------------------------------------- DICOM

def test_ct_small_windows():
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    assert is_dicom(data) and dicom_modality(data) == "CT"
    outs = {w: decode_image(data, window=w) for w in ("lung", "mediastinal", "file")}
    for out in outs.values():
        assert out.shape == (128, 128) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    assert not np.allclose(outs["lung"], outs["mediastinal"])
    # CT_small.dcm has no WindowWidth/Center, so "file" falls back to lung.
    np.testing.assert_array_equal(outs["file"], outs["lung"])


def test_hu_mapping_lung_window():
    hu = np.full((32, 32), -600.0)
    hu[0, :4] = [-1350, -1000, 150, 3000]
    out = decode_image(make_dicom(hu, slope=1.0, intercept=-1024.0))
    np.testing.assert_allclose(out[0, :4], [0.0, 350 / 1500, 1.0, 1.0], atol=1e-6)
    assert out[5, 5] == pytest.approx(0.5)
    out2 = decode_image(make_dicom(hu, slope=2.0, intercept=-2048.0))  # other rescale, same HU
    np.testing.assert_allclose(out2, out, atol=1e-3)


def test_file_window_and_mediastinal():
    hu = np.linspace(-200, 300, 32 * 32).reshape(32, 32)
    with_window = make_dicom(hu, window=(400.0, 40.0))
    med = decode_image(with_window, window="mediastinal")
    file_ = decode_image(with_window, window="file")
    assert not np.allclose(med, file_)
    assert file_[hu < -160].max() == 0.0 and file_[hu > 240].min() == 1.0


def test_monochrome1_is_inverted():
    hu = np.linspace(-1400, 400, 32 * 32).reshape(32, 32)
    m2 = decode_image(make_dicom(hu))
    m1 = decode_image(make_dicom(hu, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_no_rescale_tags_treated_as_hu():
    hu = np.linspace(-1350, 150, 32 * 32).reshape(32, 32)
    out = decode_image(make_dicom(hu, rescale=False))
    np.testing.assert_allclose(out, (hu + 1350) / 1500, atol=1e-3)


def test_non_ct_uses_min_max():
    values = np.linspace(0, 800, 32 * 32).reshape(32, 32)
    data = make_dicom(values, modality="MR", rescale=False)
    assert dicom_modality(data) == "MR"
    out = decode_image(data)
    assert out.min() == 0.0 and out.max() == 1.0


def test_dicom_without_pixel_data():
    with pytest.raises(InvalidImageError, match="pixel data"):
        decode_image(make_dicom(pixel_data=False))


def test_multiframe_dicom_rejected():
    hu = np.zeros((32, 32))
    data = make_dicom(hu, NumberOfFrames=3)
    with pytest.raises(InvalidImageError, match="multi-frame"):
        decode_image(data)


def test_jpeg2000_without_decodable_data():
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.file_meta.TransferSyntaxUID = JPEG2000
    ds.PixelData = encapsulate([b"\x00" * 100])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InvalidImageError) as info:
        decode_image(buf.getvalue())
    message = str(info.value)
    assert "JPEG 2000" in message or JPEG2000 in message or "compressed" in message


def test_dicom_without_extension_or_preamble(tmp_path):
    path = tmp_path / "IM000001"
    path.write_bytes(make_dicom())
    assert is_dicom(path.read_bytes())
    assert load_image(path).shape == (32, 32)
    bare = make_dicom(preamble=False)
    assert bare[128:132] != b"DICM"
    assert is_dicom(bare)
    np.testing.assert_allclose(decode_image(bare), decode_image(make_dicom()), atol=1e-6)


def test_is_dicom_rejects_non_dicom():
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert not is_dicom(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    assert not is_dicom(encode(Image.fromarray(synthetic_slice()), "PNG"))
    assert not is_dicom(b"")
    assert dicom_modality(b"hello") is None


def test_error_messages_do_not_leak_patient_data():
    data = make_dicom(pixel_data=False, PatientName="Doe^Jane", PatientID="PID-12345")
    with pytest.raises(InvalidImageError) as info:
        decode_image(data, name="scan.dcm")
    assert "Doe" not in str(info.value) and "PID-12345" not in str(info.value)
    # Also when a pydicom error message is wrapped (corrupt/short pixel data).
    ds = pydicom.dcmread(io.BytesIO(make_dicom(PatientName="Doe^Jane", PatientID="PID-12345")))
    ds.PixelData = ds.PixelData[:100]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InvalidImageError) as info:
        decode_image(buf.getvalue())
    assert "Doe" not in str(info.value) and "PID-12345" not in str(info.value)


def test_corrupt_values_are_not_logged_or_quoted(caplog):
    """A malformed UID that swallowed the patient name must not surface anywhere."""
    import logging
    import warnings

    with pydicom.config.disable_value_validation():
        data = make_dicom(pixel_data=False, PatientName="Doe^Jane",
                          SOPClassUID="1.2.840.10008.5.1.4.1.1.2 Doe^Jane")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidImageError) as info:
            decode_image(data)
        assert dicom_modality(data) == "CT"
    assert "Doe" not in str(info.value)
    assert not [w for w in caught if "Doe" in str(w.message)]
    assert "Doe" not in caplog.text


# ------------------------------------------------------------- model input

def test_resize_gray_validates():
    with pytest.raises(ValueError):
        resize_gray(np.zeros((4, 4, 3)), 8)
    with pytest.raises(ValueError):
        resize_gray(np.array([[0.0, np.nan], [0.0, 0.0]]), 8)
    out = resize_gray(np.zeros((10, 30), np.float32), 16)
    assert out.shape == (16, 16) and out.dtype == np.float32


def test_to_tensor_channels_are_normalised():
    pytest.importorskip("torch")
    x = to_tensor(np.full((20, 20), 0.5, np.float32), 8)
    assert tuple(x.shape) == (3, 8, 8)
    np.testing.assert_allclose(x[:, 0, 0].numpy(),
                               [(0.5 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
                               rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(16, 64), st.integers(16, 64))))
def test_property_png_decode_exact(arr):
    out = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert out.dtype == np.float32 and out.shape == arr.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 64), st.integers(1, 64)),
              elements=st.floats(0, 1, width=32)), st.integers(1, 64))
def test_property_to_tensor_shape_and_finite(gray, size):
    torch = pytest.importorskip("torch")
    x = to_tensor(gray, size)
    assert tuple(x.shape) == (3, size, size) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 1, width=32), st.integers(1, 64), st.integers(1, 64), st.integers(1, 96))
def test_property_resize_constant_stays_constant(value, h, w, size):
    out = resize_gray(np.full((h, w), value, np.float32), size)
    np.testing.assert_allclose(out, value, atol=1e-6)
