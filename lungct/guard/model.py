"""The input guard: may this slice be classified, and if not, why not?

Rules, in order (the first that applies decides):

1. **not an image**: blank or nearly uniform pixels, or too small to hold a slice.
2. **not a CT slice**: a DICOM whose Modality is never CT (MR, US, X-ray...);
   no body outline found (``lungct.guard.anatomy``); or a learned
   out-of-distribution score above its threshold.
3. **outside the lungs**: a CT slice whose lung fields cover less than
   ``min_lung`` of the body (neck, upper abdomen). Reported as such, never as
   "normal" and never as an error.
4. **accepted**.

The learned score (Lee et al. 2018, a Mahalanobis distance to a
class-agnostic Gaussian of pooled ImageNet EfficientNet-Lite0 features at
several depths, probabilistic-PCA covariance) is computed on the **lung
view**, the very image the classifiers see (``lungct.lungs.lung_view``):
the crop and rendering standardisation remove what differs between
hospitals before the score looks, so the score measures "is this chest CT
anatomy", not "is this IQ-OTH/NCCD's export". It is fitted on IQ-OTH/NCCD
and on real DICOM series of other scanners rendered in several windows
(``lungct.training.guard_fit``), with screenshot-like variants of both.

The guard is read-only and hook-free: one instance may serve many threads.
Files: ``models/ood_guard/guard.safetensors`` (arrays) + ``guard.json``
(card: method, fit data, thresholds, held-out report). No pickle anywhere.

>>> guard = InputGuard.load()                 # doctest: +SKIP
>>> guard.check(decode_image(data)).status     # doctest: +SKIP
'accepted'
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from lungct.errors import LungctError
from lungct.guard.anatomy import MIN_BODY, MIN_LUNG
from lungct.guard.caution import RenderingCaution, rendering_view
from lungct.guard.density import PPCAGaussian
from lungct.guard.features import (EXTRACTOR_FILE, EXTRACTOR_SIZE, FeatureExtractor,
                                   OnnxFeatureExtractor, shared_extractor)
from lungct.guard.verdict import (ACCEPTED, NOT_CT, NOT_IMAGE, OUTSIDE, OUTSIDE_LUNGS,
                                  REJECTED, OutOfDistribution, Verdict, as_gray,
                                  colour_verdict, modality_verdict, spread, two_tone)
from lungct.lungs import Segmentation, lung_view, segment

GUARD_NAME = "ood_guard"
WEIGHTS_FILE = "guard.safetensors"
CARD_FILE = "guard.json"
KIND = "input_guard"
"""Card kind of this design (the first release's "ood_guard" scored whole images)."""

DEFAULTS = {
    "enabled": True,
    "threshold": None,          # None: the fitted value stored in guard.json
    "min_lung": None,           # None: the card's value
    "min_body": MIN_BODY,
    "val_percentile": 99.0,
    "components": 64,           # PPCA eigenvectors kept per depth
    "variants_per_image": 2,    # random variants per fit slice (besides the slice)
    "val_variants_per_image": 2,
    "min_std": 0.02,            # below: "blank or nearly uniform image"
    "seed": 0,
    "fit_patient": "A0001",     # Lung-PET-CT-Dx patient whose series join the fit set
    "min_lung_recall": 1.0,     # share of val lung slices (lung fields found) min_lung keeps
    "caution_limit": None,      # None: the calibrated rendering-caution limit in guard.json
    "caution_percentile": 99.0,
}


INT8_MAX_SCORE_DIFF = 0.05
"""How far a machine's int8 build may score the parity views from the fit machine's
(``guard.json``'s ``int8.parity_scores``; the limit is about 3). Integer kernels differ
between CPUs; a build beyond this is not kept and the guard runs in float32."""


def parity_views(size: int = EXTRACTOR_SIZE) -> list[np.ndarray]:
    """The shipped samples and three seeded other renderings of each, in the guard's view:
    what the ONNX builds are checked on (``guard export``) and the fit records int8
    scores of. Every clone has them."""
    from lungct.config import SAMPLES_DIR
    from lungct.guard.variants import random_variant
    from lungct.preprocess import load_image

    rng = np.random.default_rng(0)
    grays = [load_image(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    grays += [random_variant(g, rng) for g in grays for _ in range(3)]
    return [lung_view(g, size) for g in grays]


class Prepared(NamedTuple):
    """A slice ready for the learned score: its lung view and lung fraction, and the
    segmentation they came from (a lung-view classifier reuses it)."""

    view: np.ndarray
    lung_fraction: float
    seg: Segmentation | None = None
    full: np.ndarray | None = None
    """The whole slice at the extractor's side, for the rendering caution's score."""


class GuardLoadError(LungctError, RuntimeError):
    """The guard files are missing or do not fit together."""


def guard_dir() -> Path:
    from lungct.config import models_dir
    return models_dir() / GUARD_NAME


def guard_config(cfg: dict | None = None) -> dict:
    """params.yaml ``ood`` merged over the defaults."""
    if cfg is None:
        from lungct.config import load_config
        cfg = load_config()
    return {**DEFAULTS, **(cfg.get("ood") or {})}


class InputGuard:
    """Decides whether a decoded slice may be classified at all (see the module docstring)."""

    def __init__(self, gaussians: dict[str, PPCAGaussian], threshold: float, card: dict,
                 min_std: float = DEFAULTS["min_std"], min_lung: float = MIN_LUNG,
                 min_body: float = MIN_BODY, extractor: FeatureExtractor | None = None,
                 folder: Path | None = None, threads: int = 0,
                 thresholds: dict[str, float] | None = None,
                 caution: RenderingCaution | None = None):
        self.gaussians = dict(gaussians)
        self.layers = tuple(self.gaussians)
        self._threshold = float(threshold)
        self.thresholds = {k: float(v) for k, v in (thresholds or {}).items()}
        """The learned score's limit per extractor precision ("int8", "float32"), each chosen
        by the same rule on that precision's validation scores (``lungct.training.guard_fit``);
        a precision not listed uses ``threshold``."""
        self.card = dict(card)
        self.min_std = float(min_std)
        self.min_lung = float(min_lung)
        self.min_body = float(min_body)
        self.size = int(card.get("input_size", EXTRACTOR_SIZE))
        self._extractor = extractor
        self.folder = Path(folder) if folder is not None else None
        """Where the guard was loaded from: its ``extractor.onnx`` (if built) lies there."""
        self.threads = int(threads)
        """ONNX Runtime threads of the extractor (``runtime.threads``; 0: half the CPUs)."""
        self.caution = caution
        """The rendering score of ``lungct.guard.caution`` (None: no caution file): scored
        beside the learned score, reported in each verdict, never deciding acceptance."""

    @property
    def extractor(self) -> FeatureExtractor | OnnxFeatureExtractor:
        """The feature extractor: ONNX Runtime when ``extractor.onnx`` is built, else PyTorch."""
        if self._extractor is None:
            onnx_path = self.folder / EXTRACTOR_FILE if self.folder is not None else None
            self._extractor = shared_extractor(self.layers, self.size, onnx_path, self.threads)
        return self._extractor

    @property
    def backend(self) -> str:
        return "onnx" if isinstance(self.extractor, OnnxFeatureExtractor) else "torch"

    @property
    def precision(self) -> str:
        """"int8" when the extractor is the int8 build, else "float32"."""
        return getattr(self.extractor, "precision", "float32")

    @property
    def threshold(self) -> float:
        """The learned score's limit for the extractor that runs (``thresholds``)."""
        if not self.thresholds:
            return self._threshold
        return self.thresholds.get(self.precision, self._threshold)

    def threshold_for(self, precision: str) -> float:
        """The learned score's limit for an extractor of ``precision`` ("float32", "int8"):
        each build is held to the threshold chosen on its own validation scores."""
        return self.thresholds.get(precision, self._threshold)

    @threshold.setter
    def threshold(self, value: float) -> None:
        if self.thresholds:
            self.thresholds[self.precision] = float(value)
        else:
            self._threshold = float(value)

    # ------------------------------------------------------------- scores
    def scores(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Mean over depths of each depth's normalised Mahalanobis score."""
        return np.mean([self.gaussians[k].score(feats[k]) for k in self.layers], axis=0)

    def score_views(self, views: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Learned scores of images already in the lung view."""
        if not len(views):
            return np.zeros(0)
        return self.scores(self.extractor(views, batch_size))

    def score_many(self, grays: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Learned scores of decoded slices (the lung view is made here)."""
        return self.score_views([lung_view(as_gray(g), self.size) for g in grays], batch_size)

    def verdict(self, score: float, std: float | None = None,
                lung_fraction: float | None = None) -> Verdict:
        """The verdict from a score, the slice's spread and its lung fraction."""
        thr = self.threshold
        if std is not None and std < self.min_std:
            return Verdict(False, float(score), thr,
                           f"{REJECTED} (blank or nearly uniform image)", NOT_IMAGE)
        if not math.isfinite(score) or score > thr:
            return Verdict(False, float(score), thr,
                           f"{REJECTED} (unlike axial chest CT: OOD score {score:.2f} > "
                           f"threshold {thr:.2f})", NOT_CT, lung_fraction)
        if lung_fraction is not None and lung_fraction < self.min_lung:
            return Verdict(False, float(score), thr,
                           f"{OUTSIDE} (lung fields {lung_fraction:.1%} of the body, below "
                           f"{self.min_lung:.1%})", OUTSIDE_LUNGS, lung_fraction)
        return Verdict(True, float(score), thr,
                       f"axial chest CT slice with lung fields (OOD score {score:.2f} <= "
                       f"{thr:.2f})", ACCEPTED, lung_fraction)

    def check(self, gray: np.ndarray) -> Verdict:
        """Verdict for one decoded [0, 1] slice (``decode_image`` output)."""
        return self.check_many([gray])[0]

    def check_many(self, grays: Sequence[np.ndarray], batch_size: int = 32,
                   datas: Sequence[bytes | None] | None = None) -> list[Verdict]:
        """Verdicts for decoded slices; ``datas`` (the files' bytes) adds the DICOM modality rule."""
        return self.check_prepared([self.prepare(g, datas[i] if datas is not None else None)
                                    for i, g in enumerate(grays)], batch_size)

    def prepare(self, gray: np.ndarray, data: bytes | None = None,
                seg: Segmentation | None = None) -> Verdict | Prepared:
        """Everything but the learned score, for one slice: a verdict already (blank, not CT
        by its tag, no body), or the lung view to score and the lung fraction.

        Pure numpy/scipy on one slice, so a pipeline runs it in its decode threads
        and keeps only the batched score for the model's turn; ``seg``: a
        segmentation of this slice made elsewhere (it is the same function).
        """
        g = as_gray(gray)
        early = self._early(g, data)
        if early is not None:
            return early
        seg = seg if seg is not None else segment(g)
        if seg.body_fraction < self.min_body:
            return Verdict(False, math.nan, self.threshold,
                           f"{REJECTED} (no body outline found)", NOT_CT, 0.0)
        full = rendering_view(g, self.size) if self.caution is not None else None
        return Prepared(lung_view(g, self.size, seg), seg.lung_fraction, seg, full)

    def check_prepared(self, items: Sequence[Verdict | Prepared],
                       batch_size: int = 32) -> list[Verdict]:
        """Verdicts for ``prepare`` outputs: the learned score runs once, batched."""
        todo = [i for i, p in enumerate(items) if isinstance(p, Prepared)]
        full = [i for i in todo if self.caution is not None and items[i].full is not None]
        views = [items[i].view for i in todo] + [items[i].full for i in full]
        feats = self.extractor(views, batch_size) if views else {}
        scores = self.scores({k: v[:len(todo)] for k, v in feats.items()}) if todo else []
        rendering = dict(zip(full, self.caution.score(
            {k: v[len(todo):] for k, v in feats.items()}))) if full else {}
        limit = self.caution.limit(self.precision) if full else None
        out = list(items)
        for i, s in zip(todo, scores):
            out[i] = self.verdict(float(s), None, items[i].lung_fraction)
            if i in rendering:
                out[i] = replace(out[i], rendering_score=float(rendering[i]),
                                 rendering_limit=limit)
        return out  # type: ignore[return-value]

    def _early(self, gray: np.ndarray, data: bytes | None) -> Verdict | None:
        if min(gray.shape) < 16 or spread(gray) < self.min_std:
            return Verdict(False, math.nan, self.threshold,
                           f"{REJECTED} (blank, nearly uniform or too small image)", NOT_IMAGE)
        if two_tone(gray):
            return Verdict(False, math.nan, self.threshold,
                           f"{REJECTED} (a two-tone image: a mask or a drawing)", NOT_CT)
        if data is not None:
            from lungct.preprocess import dicom_modality, is_dicom
            if is_dicom(data):
                return modality_verdict(dicom_modality(data), self.threshold)
            return colour_verdict(data, self.threshold)
        return None

    def check_upload(self, data: bytes, gray: np.ndarray) -> Verdict:
        """Verdict for an uploaded file: its DICOM modality first (if DICOM), then its pixels."""
        return self.check_many([gray], datas=[data])[0]

    def require(self, gray: np.ndarray, data: bytes | None = None) -> Verdict:
        """The verdict if the input may be classified; raises :class:`OutOfDistribution` if not."""
        verdict = self.check_upload(data, gray) if data is not None else self.check(gray)
        if not verdict.accepted:
            raise OutOfDistribution(verdict)
        return verdict

    # ---------------------------------------------------------------- io
    def save(self, folder: str | Path | None = None) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder) if folder else guard_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, g in self.gaussians.items():
            tensors.update(g.tensors(k))
        card = {**self.card, "kind": KIND, "threshold": self.threshold,
                **({"thresholds": self.thresholds} if self.thresholds else {}),
                "min_std": self.min_std, "min_lung": self.min_lung, "min_body": self.min_body,
                "layers": list(self.layers)}
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  str(folder / WEIGHTS_FILE),
                  metadata={"lungct_guard": json.dumps({"kind": KIND,
                                                        "layers": list(self.layers)})})
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        self.card = card
        return folder

    @classmethod
    def load(cls, path: str | Path | None = None, cfg: dict | None = None) -> "InputGuard":
        """Load ``models/ood_guard`` (or ``path``); params.yaml ``ood`` values win over the card's."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(path) if path else guard_dir()
        if folder.suffix == ".safetensors":
            folder = folder.parent
        weights, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
        if not weights.exists() or not card_path.exists():
            raise GuardLoadError(f"no input guard in {folder} (need {WEIGHTS_FILE} and "
                                 f"{CARD_FILE}; `python -m lungct guard fit` makes them)")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
            tensors = load_file(str(weights))
            gaussians = {k: PPCAGaussian.from_tensors(tensors, k) for k in card["layers"]}
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
            raise GuardLoadError(f"input guard in {folder} is corrupt or inconsistent: "
                                 f"{type(err).__name__}: {str(err)[:200]}") from err
        if card.get("kind") != KIND:
            raise GuardLoadError(f"{card_path} is not an input guard card of this version "
                                 f"(kind {card.get('kind')!r}); refit with "
                                 "`python -m lungct guard fit`")
        from lungct.onnx_runtime import runtime_settings

        params = guard_config(cfg)

        def pick(key, default):
            value = params.get(key)
            return float(card.get(key, default) if value is None else value)

        # params.yaml's ood.threshold stands for every precision
        thresholds = card.get("thresholds") if params.get("threshold") is None else None
        try:
            override = params.get("caution_limit")
            caution = RenderingCaution.load(folder, card, None if override is None
                                            else float(override))
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
            raise GuardLoadError(f"the rendering caution in {folder} is corrupt: "
                                 f"{type(err).__name__}: {str(err)[:200]}; recompute it with "
                                 "`python -m lungct guard caution`") from err
        return cls(gaussians, pick("threshold", math.inf), card,
                   min_std=pick("min_std", DEFAULTS["min_std"]),
                   min_lung=pick("min_lung", MIN_LUNG), min_body=pick("min_body", MIN_BODY),
                   folder=folder, threads=runtime_settings(cfg).threads, thresholds=thresholds,
                   caution=caution)


OODGuard = InputGuard
"""The first release's name for the guard."""
