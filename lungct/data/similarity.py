"""Image fingerprints for finding duplicates and near-twins.

A slice is summarised by a small grey thumbnail, centred and scaled to unit
norm, so the dot product of two thumbnails is their Pearson correlation. On
IQ-OTH/NCCD consecutive slices of one patient correlate at about 0.84-0.95 and
random pairs at 0.23-0.40, which is what makes grouping by similarity work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from lungct.preprocess import load_image


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes (byte-identical duplicates)."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def thumbnail(gray: np.ndarray, size: int = 32) -> np.ndarray:
    """A zero-mean, unit-norm ``size*size`` vector of a [0, 1] grey image."""
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    vec = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float64).ravel()
    vec = vec - vec.mean()
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def pixel_md5(gray: np.ndarray) -> str:
    """MD5 of decoded pixels: equal for files that differ only in encoding."""
    quantised = np.round(np.asarray(gray) * 255).astype(np.uint8)
    return hashlib.md5(quantised.tobytes() + str(quantised.shape).encode()).hexdigest()


def fingerprints(root: str | Path, paths: list[str], size: int = 32):
    """Byte MD5, pixel MD5 and thumbnail matrix (n, size*size) for ``paths`` under ``root``."""
    root = Path(root)
    md5s, pixel_md5s, thumbs = [], [], []
    for rel in paths:
        gray = load_image(root / rel)
        md5s.append(file_md5(root / rel))
        pixel_md5s.append(pixel_md5(gray))
        thumbs.append(thumbnail(gray, size))
    return md5s, pixel_md5s, np.stack(thumbs)


def correlation_matrix(thumbs_a: np.ndarray, thumbs_b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise correlations of unit-norm thumbnails (rows of a vs rows of b)."""
    thumbs_b = thumbs_a if thumbs_b is None else thumbs_b
    return thumbs_a.astype(np.float32) @ thumbs_b.astype(np.float32).T
