"""The bad, hostile and non-CT input corpus, and what each file must yield.

    python tests/make_corpus.py             # rewrites tests/corpus/manifest.json and README.md
    python tests/make_corpus.py --out DIR   # also writes the files themselves into DIR

Every file is built from fixed bytes or seeded random numbers (no dataset, no
network), so two runs give byte-identical files; the files are therefore not
committed: ``tests/test_corpus.py`` builds them in memory (under a second) and
checks each against the committed manifest (size and SHA-256). ``manifest.json``
lists, per file, the ``name`` passed to ``decode_image`` (hostile names live
there, not on disk), what it must yield (``invalid``: an ``InvalidImageError``
whose message contains ``keyword``; ``rejected``: it decodes, and the OOD guard
rejects it) and why. ``README.md`` is written from the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
sys.path.insert(0, str(HERE.parent))

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MAMMO_STORAGE = "1.2.840.10008.5.1.4.1.1.1.2"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
JPEG2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
FIXED_UID = "1.2.826.0.1.3680043.8.498.1"  # fixed so the bytes are reproducible


# ------------------------------------------------------------------ helpers

def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def u8(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit grey PNG of width x height; all rows zero (compresses ~1000:1)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    line = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(line) for _ in range(rows if rows is not None else height))
    body += comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def sample_slice(n: int = 128) -> np.ndarray:
    """A crude CT-like test pattern in HU (body, two lungs, spine) for DICOM files."""
    yy, xx = np.mgrid[0:n, 0:n] / (n / 2) - 1
    hu = np.full((n, n), -1000.0)
    hu[(xx / 0.9) ** 2 + (yy / 0.65) ** 2 < 1] = 40
    for s in (-1, 1):
        hu[((xx - s * 0.4) / 0.3) ** 2 + (yy / 0.45) ** 2 < 1] = -850
    hu[(xx / 0.1) ** 2 + ((yy - 0.45) / 0.1) ** 2 < 1] = 700
    return hu


def dicom(pixels: np.ndarray | None, *, modality: str | None = "CT", sop=CT_IMAGE_STORAGE,
          photometric: str = "MONOCHROME2", syntax: str = "1.2.840.10008.1.2.1",
          encapsulated: bytes | None = None, frames: int | None = None,
          rescale: bool = True, extra: dict | None = None, preamble: bool = True) -> bytes:
    """A small DICOM file; stored int16 values are ``pixels`` (HU + 1024 with rescale)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = FIXED_UID
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = FIXED_UID + ".9"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = FIXED_UID
    ds.StudyInstanceUID = FIXED_UID + ".1"
    ds.SeriesInstanceUID = FIXED_UID + ".2"
    ds.PatientName = "Corpus^Synthetic"
    ds.PatientID = "CORPUS-0"
    if modality:
        ds.Modality = modality
    shape = (pixels.shape if pixels is not None else (128, 128))
    ds.Rows, ds.Columns = int(shape[-2]), int(shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    if frames:
        ds.NumberOfFrames = frames
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if encapsulated is not None:
        ds.PixelData = encapsulated
        ds["PixelData"].VR = "OB"
    elif pixels is not None:
        stored = pixels + 1024 if rescale else pixels
        ds.PixelData = np.round(stored).astype("<i2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=preamble, implicit_vr=False, little_endian=True)
    return buf.getvalue()


# ------------------------------------------------------------------- corpus

def build() -> list[dict]:
    """(file, bytes, name, expect, keyword, what) for every corpus entry."""
    from pydicom.encaps import encapsulate

    from lungct.lab.phantoms import (abdomen_ct_phantom, brain_ct_phantom, chest_xray_phantom,
                                 document, rendered)

    rng = np.random.default_rng(20240601)
    entries: list[dict] = []

    def add(file, data, expect, keyword, what, name=None):
        entries.append({"file": file, "data": data, "name": name if name is not None else file,
                        "expect": expect, "keyword": keyword, "what": what})

    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    pattern = u8(0.5 + 0.4 * np.sin(12 * xx) * np.cos(9 * yy))
    png = encode(pattern, "PNG")
    jpg = encode(pattern, "JPEG", quality=90)

    # -- empty and truncated/corrupt rasters
    add("empty.png", b"", "invalid", "empty file", "zero bytes")
    add("empty_named.dcm", b"", "invalid", "empty file", "zero bytes with a DICOM name")
    add("png_signature_only.png", png[:8], "invalid", "unrecognised",
        "only the 8-byte PNG signature")
    add("png_truncated_header.png", png[:20], "invalid", "unreadable image header",
        "PNG cut inside the IHDR chunk")
    add("png_truncated_half.png", png[: len(png) // 2], "invalid", "truncated or corrupt",
        "PNG cut in the middle of the pixel data")
    bad_crc = bytearray(png)
    idat = bad_crc.find(b"IDAT")
    bad_crc[idat + 10] ^= 0xFF
    add("png_bad_crc.png", bytes(bad_crc), "invalid", "truncated or corrupt",
        "one flipped byte in IDAT (CRC mismatch)")
    garbage = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    ihdr = struct.pack(">IIBBBBB", 256, 256, 8, 0, 0, 0, 0)
    add("png_garbage_idat.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", garbage) + png_chunk(b"IEND", b""), "invalid",
        "truncated or corrupt", "valid chunks, IDAT of random bytes (not zlib)")
    add("png_zero_width.png", b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", 0, 256, 8, 0, 0, 0, 0)) + png_chunk(b"IEND", b""),
        "invalid", "unrecognised", "IHDR declares width 0")
    add("jpeg_soi_only.jpg", b"\xff\xd8\xff", "invalid", "unrecognised",
        "the 3-byte JPEG start marker only")
    add("jpeg_truncated_header.jpg", jpg[:200], "invalid", "unreadable image header",
        "JPEG cut inside its tables")
    add("jpeg_truncated_half.jpg", jpg[: len(jpg) // 2], "invalid", "truncated or corrupt",
        "JPEG cut in the middle of the scan")
    sos = jpg.find(b"\xff\xda")
    add("jpeg_no_scan.jpg", jpg[:sos] + b"\xff\xd9", "invalid", "truncated or corrupt",
        "JPEG headers, then end-of-image without any scan")
    webp = encode(pattern, "WEBP", quality=80)
    add("webp_truncated.webp", webp[: len(webp) // 2], "invalid", "unreadable image header",
        "WebP cut in half")
    tif = bytearray(encode(pattern, "TIFF"))
    add("tiff_truncated.tif", bytes(tif[: len(tif) // 3]), "invalid", "truncated or corrupt",
        "TIFF cut to a third (strip offsets point past the end)")
    add("gif_header_only.gif", b"GIF89a\x00\x01\x00\x01\x80\x00\x00", "invalid", "unrecognised",
        "GIF screen descriptor, no image")
    bmp = bytearray(encode(pattern.convert("L"), "BMP"))
    struct.pack_into("<ii", bmp, 18, 60000, 60000)
    add("bmp_huge_header.bmp", bytes(bmp), "invalid", "too large",
        "BMP header claims 60000x60000 (3.6 gigapixels)")

    # -- not images at all, under image names
    add("html_error_page.png", b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title>"
        b"</head><body><h1>502 Bad Gateway</h1></body></html>\n", "invalid", "HTML",
        "an HTML error page saved as .png")
    add("html_lowercase.jpg", b"\n  <html><body>Not found</body></html>", "invalid", "HTML",
        "HTML with leading whitespace, as .jpg")
    add("svg_drawing.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
        b'width="10" height="10"><rect width="10" height="10"/></svg>', "invalid", "SVG",
        "an SVG vector drawing as .png")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        info = zipfile.ZipInfo("slice.png", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(info, png)
    add("archive.png", zbuf.getvalue(), "invalid", "ZIP", "a ZIP archive renamed to .png")
    add("document.pdf.jpg", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n"
        b"%%EOF\n", "invalid", "PDF", "a PDF renamed to .jpg")
    add("compressed.png", b"\x1f\x8b\x08\x00" + bytes(20),
        "invalid", "gzip", "gzip magic as .png")
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + rng.integers(
        0, 256, 2000, dtype=np.uint8).tobytes()
    add("program_elf.png", elf, "invalid", "unrecognised", "a Linux ELF executable as .png")
    exe = (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(44)
           + b"\x80\x00\x00\x00" + b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21"
           + b"This program cannot be run in DOS mode.\r\r\n$" + bytes(200))
    add("program_exe.jpg", exe, "invalid", "unrecognised", "a Windows EXE (MZ) as .jpg")
    add("notes.png", b"patient notes: follow-up CT in 3 months\n" * 20, "invalid", "text",
        "a plain-text file as .png")
    add("data.json.png", json.dumps({"label": "malignant", "probability": 0.99}).encode(),
        "invalid", "text", "JSON text as .png")
    nifti = bytearray(352)
    struct.pack_into("<i", nifti, 0, 348)
    nifti[344:348] = b"n+1\x00"
    add("volume.nii.png", bytes(nifti) + bytes(512), "invalid", "NIfTI",
        "a NIfTI-1 volume header as .png")

    # -- size limits, bombs, animation
    add("bomb_100000x100000.png", bomb_png(100000, 100000, rows=4), "invalid", "too large",
        "PNG header declaring 100000x100000 pixels (10 gigapixels), 4 rows of data")
    add("huge_20000x20000_1bit.png", bomb_png(20000, 20000), "invalid", "too large",
        "a complete 20000x20000 1-bit PNG (400 Mpx) that compresses to a few kB")
    add("tiny_1x1.png", encode(Image.new("L", (1, 1), 128), "PNG"), "invalid", "too small",
        "a 1x1 pixel (tracking pixel)")
    add("tiny_15x15.png", encode(Image.new("L", (15, 15), 128), "PNG"), "invalid", "too small",
        "15x15, one below the minimum side")
    frames = [u8(np.full((64, 64), v)) for v in (0.2, 0.5, 0.8)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", gif.getvalue(), "invalid", "animated", "a 3-frame animated GIF")

    # -- DICOM
    hu = sample_slice()
    add("dicom_no_pixel_data.dcm", dicom(None), "invalid", "no pixel data",
        "CT DICOM header without PixelData")
    add("dicom_preamble_only.dcm", bytes(128) + b"DICM", "invalid", "DICOM",
        "128-byte preamble and DICM magic, nothing else")
    full = dicom(hu)
    add("dicom_truncated_pixels.dcm", full[: len(full) - 9000], "invalid", "DICOM",
        "valid CT DICOM cut inside the pixel data")
    add("dicom_jpeg2000_garbage.dcm", dicom(hu, syntax=JPEG2000, encapsulated=encapsulate(
        [b"\xff\x4f\xff\x51" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()])),
        "invalid", "compressed", "JPEG 2000 transfer syntax, garbage fragment")
    add("dicom_rle_garbage.dcm", dicom(hu, syntax=RLE, encapsulated=encapsulate(
        [rng.integers(0, 256, 200, dtype=np.uint8).tobytes()])),
        "invalid", "DICOM pixel data", "RLE Lossless transfer syntax, garbage fragment")
    add("dicom_multiframe.dcm", dicom(np.stack([hu, hu, hu]), frames=3), "invalid",
        "multi-frame", "a 3-frame CT DICOM")
    add("dicom_palette.dcm", dicom(hu, photometric="PALETTE COLOR", rescale=False,
                                   modality="OT", sop=SECONDARY_CAPTURE), "invalid",
        "PALETTE COLOR", "PALETTE COLOR photometric interpretation")
    add("dicom_bad_rows.dcm", dicom(hu, extra={"Rows": 9999}), "invalid", "DICOM",
        "Rows tag disagrees with the pixel data length")
    mammo = np.clip(np.hypot(*(np.mgrid[0:128, 0:128] - np.array([64, 0])[:, None, None]))
                    * 30, 0, 3000)
    add("dicom_mammography_MG.dcm", dicom(3000 - mammo, modality="MG", sop=MAMMO_STORAGE,
                                          rescale=False), "rejected", "modality MG",
        "decodes (min-max, no HU): rejected by the guard on its Modality tag (MG)")
    fan = np.zeros((128, 128))
    ang = np.arctan2(np.mgrid[0:128, 0:128][1] - 64, np.mgrid[0:128, 0:128][0] + 10)
    rad = np.hypot(np.mgrid[0:128, 0:128][1] - 64, np.mgrid[0:128, 0:128][0] + 10)
    fan[(np.abs(ang) < 0.6) & (rad < 130)] = 1
    fan *= rng.gamma(1.5, 400, fan.shape)
    add("dicom_ultrasound_US.dcm", dicom(fan, modality="US", sop=US_STORAGE, rescale=False),
        "rejected", "modality US", "ultrasound-like fan: rejected on its Modality tag (US)")
    photo = rng.random((128, 128)) * 0.3 + 0.5 * np.sin(xx[::2, ::2] * 20) ** 2
    add("dicom_OT_noise_photo.dcm", dicom(np.round(photo * 4000), modality="OT",
                                          sop=SECONDARY_CAPTURE, rescale=False),
        "rejected", "not a lung CT slice", "secondary capture (OT) of a non-CT pattern: "
        "modality is allowed, the pixel check rejects it")
    add("dicom_ct_noise.dcm", dicom(rng.uniform(-1000, 1000, (128, 128))), "rejected",
        "not a lung CT slice", "a CT DICOM whose pixels are uniform noise")
    add("dicom_ct_uniform.dcm", dicom(np.full((128, 128), -1000.0)), "rejected", "blank",
        "a CT DICOM of air only (blank after windowing)")

    # -- hostile names: the content decides, the name must not matter
    add("name_traversal.png", encode(u8(rng.random((128, 128))), "PNG"), "rejected",
        "not a lung CT slice", "noise PNG uploaded as ../../etc/passwd.png",
        name="../../etc/passwd.png")
    add("name_unicode.png", b"<html><body>\xd1\x81\xd0\xbd\xd0\xb8\xd0\xbc\xd0\xbe\xd0\xba"
        b"</body></html>", "invalid", "HTML", "HTML uploaded as 'снимок 🫁.png'",
        name="снимок 🫁.png")
    add("name_windows_path.dcm", png, "rejected", "not a lung CT slice",
        "a PNG uploaded as C:\\\\scans\\\\..\\\\slice.dcm (DICOM name, PNG content)",
        name="C:\\scans\\..\\slice.dcm")
    add("name_nul_and_long.png", encode(u8(np.full((64, 64), 0.0)), "PNG"), "rejected",
        "blank", "a black PNG uploaded under a 300-char name with NUL and newline",
        name="a\x00b\n" + "x" * 300 + ".png")

    # -- decode fine, but are not lung CT slices: the guard must reject them
    try:
        import skimage.data as skd
        astronaut = Image.fromarray(skd.astronaut()).resize((256, 256))
        camera = Image.fromarray(skd.camera()).resize((256, 256))
        add("photo_astronaut.jpg", encode(astronaut, "JPEG", quality=85), "rejected",
            "not a lung CT slice", "colour photo (scikit-image astronaut)")
        add("photo_camera.png", encode(camera, "PNG"), "rejected", "not a lung CT slice",
            "grey photo (scikit-image camera)")
    except ImportError:
        raise SystemExit("scikit-image is needed to build the corpus (requirements.txt)")
    add("noise_uniform.png", encode(u8(rng.random((256, 256))), "PNG"), "rejected",
        "not a lung CT slice", "uniform noise")
    add("blank_black.png", encode(Image.new("L", (256, 256), 0), "PNG"), "rejected", "blank",
        "all black")
    add("blank_white.jpg", encode(Image.new("RGB", (256, 256), (255, 255, 255)), "JPEG"),
        "rejected", "blank", "all white")
    add("transparent_rgba.png", encode(Image.new("RGBA", (256, 256), (0, 0, 0, 0)), "PNG"),
        "rejected", "blank", "fully transparent RGBA")
    add("document_scan.png", encode(u8(document(7)).resize((300, 400)), "PNG"), "rejected",
        "not a lung CT slice", "a rendered text page")
    add("checkerboard.png", encode(u8(((np.mgrid[0:256, 0:256] // 32).sum(0) % 2) * 1.0),
                                   "PNG"), "rejected", "not a lung CT slice", "checkerboard")
    add("chest_xray_phantom.jpg", encode(u8(chest_xray_phantom(3)).resize((256, 256)), "JPEG",
                                         quality=85), "rejected", "not a lung CT slice",
        "procedural frontal chest X-ray")
    add("brain_ct_phantom.png", encode(u8(rendered(brain_ct_phantom(3), "brain")).resize(
        (256, 256)), "PNG"), "rejected", "not a lung CT slice", "procedural head CT, brain window")
    add("abdomen_ct_phantom.png", encode(u8(rendered(abdomen_ct_phantom(3), "abdomen")).resize(
        (256, 256)), "PNG"), "rejected", "not a lung CT slice", "procedural abdominal CT")
    add("strip_2000x16.png", encode(u8(rng.random((16, 2000))), "PNG"), "rejected",
        "not a lung CT slice", "a 2000x16 strip (valid size, absurd aspect ratio)")
    return entries


def write(entries: list[dict], folder: Path = CORPUS, files_to: Path | None = None) -> None:
    """Manifest and README into ``folder``; the files themselves only into ``files_to``."""
    folder.mkdir(parents=True, exist_ok=True)
    if files_to is not None:
        files_to.mkdir(parents=True, exist_ok=True)
        for e in entries:
            (files_to / e["file"]).write_bytes(e["data"])
    manifest = []
    for e in entries:
        manifest.append({k: e[k] for k in ("file", "name", "expect", "keyword", "what")}
                        | {"bytes": len(e["data"]),
                           "sha256": hashlib.sha256(e["data"]).hexdigest()})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False)
                                          + "\n", encoding="utf-8")
    lines = [
        "# Hostile and non-CT input corpus",
        "",
        "Generated by `python tests/make_corpus.py` (deterministic; do not edit by hand; the",
        "files are built in memory by `tests/test_corpus.py`, `--out DIR` writes them to disk)",
        "and checked there. Each file goes through `decode_image(data, name=NAME)`",
        "(NAME is the upload name in the table: hostile names live here, not on disk) and must",
        "yield either",
        "",
        "- **invalid**: `InvalidImageError` whose message contains the keyword, or",
        "- **rejected**: it decodes, and `OODGuard.check_upload` rejects it (the keyword is in",
        "  the verdict's reason: `modality XX` for non-CT DICOM modalities, `blank` for uniform",
        "  images, otherwise `not a lung CT slice`).",
        "",
        "Never an uncaught exception, never a class. DICOM with a non-CT modality (MG, US)",
        "decodes (decoding is not the place for policy); the guard rejects it on its Modality",
        "tag, and an OT (secondary capture) file is judged by its pixels.",
        "",
        "| file | upload name | must yield | keyword | what |",
        "|---|---|---|---|---|",
    ]
    for m in manifest:
        name = m["name"] if m["name"] != m["file"] else ""
        name = json.dumps(name, ensure_ascii=False)[1:-1].replace("|", "\\|") if name else ""
        lines.append(f"| {m['file']} | {name} | {m['expect']} | {m['keyword']} | {m['what']} |")
    lines.append("")
    lines.append(f"{len(manifest)} files, {sum(m['bytes'] for m in manifest):,} bytes in all.")
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the corpus files into this folder")
    args = ap.parse_args(argv)
    entries = build()
    write(entries, files_to=args.out)
    total = sum(len(e["data"]) for e in entries)
    print(f"wrote the manifest of {len(entries)} files ({total:,} bytes) to {CORPUS}"
          + (f", the files to {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
