"""Renderings of a CT slice as other hospitals, viewers and screenshots produce them.

Used to fit and validate the guard (and by the safety report): a slice is
re-displayed in other windows, cropped, resampled, framed and re-compressed,
so the guard learns "axial chest CT" rather than one export. ``hu_window``
renders a DICOM's Hounsfield units in any window.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from lungct.guard.verdict import as_gray
from lungct.preprocess import resize_gray


def window(gray: np.ndarray, low: float = 0.0, high: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Re-display: ``((g - low) / (high - low)) ** gamma``, clipped to [0, 1]."""
    g = as_gray(gray)
    if not high > low:
        raise ValueError("window needs high > low")
    if not gamma > 0:
        raise ValueError("gamma must be positive")
    out = np.clip((g - low) / (high - low), 0.0, 1.0) ** gamma
    return out.astype(np.float32)


def tissue_masks(gray: np.ndarray, body_level: float = 0.02,
                 bone_level: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rough (body, lung, bone) boolean masks of a slice displayed like the training data.

    Body: everything above ``body_level`` after a closing, holes filled (so the
    dark lungs inside count as body). Lungs: dark regions inside the body.
    Bone: bright pixels. Only used to imitate other display windows.
    """
    from scipy import ndimage as ndi

    g = as_gray(gray)
    side = max(g.shape)
    k = max(3, side // 64)
    smooth = ndi.uniform_filter(g, size=k)
    body = ndi.binary_closing(smooth > body_level, iterations=max(1, k // 2))
    body = ndi.binary_fill_holes(body)
    dark = body & ~ndi.binary_dilation(smooth > body_level, iterations=max(1, k // 3))
    labels, n = ndi.label(dark)
    if n:  # lungs are large dark regions; small gaps in the speckle are soft tissue
        sizes = ndi.sum(dark, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= 0.004 * g.size) + 1
        lung = np.isin(labels, keep)
    else:
        lung = dark
    bone = g > bone_level
    return body, lung, bone


def retissue(gray: np.ndarray, soft: float, lung: float, detail: float = 0.5,
             blur: float = 1.0, seed: int = 0) -> np.ndarray:
    """Imitate another CT window by re-rendering tissue classes.

    The training slices show soft tissue as dark speckle, lungs black and bone
    white; a lung window shows soft tissue light grey (``soft`` ~0.85) and the
    lungs dark grey (``lung`` ~0.3) with vessels brighter; a mediastinal window
    keeps the lungs black and soft tissue mid grey (``soft`` ~0.5). Air
    outside the body stays black, bone white; the slice's own structure is
    kept as ``detail``.
    """
    from scipy import ndimage as ndi

    g = as_gray(gray)
    body, lungs, bone = tissue_masks(g)
    rng = np.random.default_rng(seed)
    out = np.zeros_like(g)
    tissue = body & ~lungs
    texture = ndi.gaussian_filter(g, 1.5)
    out[tissue] = soft + detail * (texture[tissue] - 0.05) + rng.normal(0, 0.02, int(tissue.sum()))
    out[lungs] = lung + detail * 2.0 * g[lungs]
    out[bone] = np.maximum(out[bone], np.clip(soft + (1.0 - soft) * 1.5 * g[bone], 0, 1))
    if blur > 0:
        out = ndi.gaussian_filter(out, blur)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def crop(gray: np.ndarray, frac: float, fx: float = 0.5, fy: float = 0.5) -> np.ndarray:
    """Keep a ``frac`` x ``frac`` window; ``fx``/``fy`` in [0, 1] place it."""
    g = as_gray(gray)
    if not 0 < frac <= 1:
        raise ValueError("frac must be in (0, 1]")
    h, w = g.shape
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    y0 = int(round((h - ch) * min(max(fy, 0.0), 1.0)))
    x0 = int(round((w - cw) * min(max(fx, 0.0), 1.0)))
    return np.ascontiguousarray(g[y0:y0 + ch, x0:x0 + cw])


def border(gray: np.ndarray, width: int, value: float = 0.5) -> np.ndarray:
    """Pad with a uniform frame (window chrome of a screenshot)."""
    g = as_gray(gray)
    return np.pad(g, int(width), constant_values=float(np.clip(value, 0, 1))).astype(np.float32)


def resample(gray: np.ndarray, side: int) -> np.ndarray:
    """Through ``side`` x ``side`` pixels (lower or higher resolution)."""
    return resize_gray(as_gray(gray), int(side))


def jpeg(gray: np.ndarray, quality: int = 75) -> np.ndarray:
    """An 8-bit JPEG round trip."""
    img = Image.fromarray(np.round(as_gray(gray) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("L"), dtype=np.float32) / 255.0


def kernel(gray: np.ndarray, sharpness: float, noise: float = 0.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Another reconstruction kernel and dose: ``sharpness`` < 0 blurs (a soft kernel,
    Gaussian sigma ``-sharpness`` px), > 0 sharpens (an edge kernel: unsharp mask of that
    amount), and ``noise`` adds Gaussian noise of that standard deviation."""
    from scipy import ndimage as ndi
    g = as_gray(gray)
    if sharpness < 0:
        g = ndi.gaussian_filter(g, -sharpness)
    elif sharpness > 0:
        g = g + sharpness * (g - ndi.gaussian_filter(g, 1.0))
    if noise > 0:
        g = g + (rng or np.random.default_rng(0)).normal(0.0, noise, g.shape)
    return np.clip(g, 0.0, 1.0).astype(np.float32)


def affine(gray: np.ndarray, angle: float = 0.0, scale: float = 1.0, dx: float = 0.0,
           dy: float = 0.0, hflip: bool = False) -> np.ndarray:
    """The training augmentation: rotation (degrees), zoom, shift (fraction of side), flip."""
    g = as_gray(gray)
    h, w = g.shape
    img = Image.fromarray(g)  # mode "F": no 8-bit rounding
    if hflip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    cx, cy = w / 2.0, h / 2.0
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    tx, ty = dx * w, dy * h
    # inverse map: output (x, y) -> input
    coeffs = (cos, sin, cx - cos * (cx + tx) - sin * (cy + ty),
              -sin, cos, cy + sin * (cx + tx) - cos * (cy + ty))
    out = img.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR,
                        fillcolor=0.0)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def random_variant(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random "other source" rendering of a training-style slice.

    Always the training augmentation; then, each with some probability, a
    display change (gamma/contrast or a re-rendered lung/mediastinal window),
    another reconstruction kernel and dose (blur or sharpening, noise), a crop, a
    resolution change, a screenshot border, a JPEG round trip.
    """
    g = affine(gray, angle=rng.uniform(-15, 15), scale=rng.uniform(0.9, 1.1),
               dx=rng.uniform(-0.1, 0.1), dy=rng.uniform(-0.1, 0.1), hflip=rng.random() < 0.5)
    r = rng.random()
    if r < 0.3:
        low, high = rng.uniform(0.0, 0.12), rng.uniform(0.55, 1.0)
        g = window(g, low, high, float(np.exp(rng.uniform(np.log(0.4), np.log(2.5)))))
    elif r < 0.5:
        g = retissue(g, soft=rng.uniform(0.7, 0.95), lung=rng.uniform(0.12, 0.4),
                     detail=rng.uniform(0.2, 0.8), blur=rng.uniform(0.5, 1.5),
                     seed=int(rng.integers(1 << 31)))
    elif r < 0.65:
        g = retissue(g, soft=rng.uniform(0.35, 0.65), lung=rng.uniform(0.0, 0.05),
                     detail=rng.uniform(0.2, 0.8), blur=rng.uniform(0.5, 1.5),
                     seed=int(rng.integers(1 << 31)))
    if rng.random() < 0.4:
        g = kernel(g, float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.5)),
                   float(rng.uniform(0.0, 0.04)), rng)
    if rng.random() < 0.5:
        g = crop(g, rng.uniform(0.6, 0.97), rng.random(), rng.random())
    if rng.random() < 0.3:
        g = resample(g, int(rng.choice([128, 192, 256, 384, 768])))
    if rng.random() < 0.2:
        g = border(g, int(rng.integers(4, 40)), float(rng.choice([0.0, 0.12, 0.5, 0.94, 1.0])))
    if rng.random() < 0.3:
        g = jpeg(g, int(rng.integers(40, 95)))
    return g
