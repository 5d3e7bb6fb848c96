"""How far a slice's rendering and framing lie from the training exports: the caution limit.

The guard's own score looks at the *lung view* (crop and rendering standardised) and was
fitted on IQ-OTH/NCCD and on Lung-PET-CT-Dx in several windows, so it answers "is this
chest CT" and is blind, by design, to what a full-view classifier learned: one hospital's
narrow-window JPEG export. This second score looks at what such a classifier sees, the
whole slice as it came, and is fitted on IQ-OTH/NCCD's grouped **train** slices alone:
a probabilistic-PCA Gaussian (``density.PPCAGaussian``) of the guard extractor's
``blocks.3`` features (texture and intensity: a window, a kernel, a frame change them),
from the same forward pass machinery the guard already runs. Its limit is the 99th
percentile of the grouped **val** slices' scores. A slice above it is still classified,
and its answer carries a caution (``lungct.pipeline.slice_caution``) and is flagged unsure;
acceptance is unchanged.

``python -m lungct guard caution`` fits it, writes ``caution.safetensors`` beside the
guard and the ``caution`` section of ``guard.json`` (limit, rule, and the rates it gives
on IQ-OTH/NCCD test, Lung-PET-CT-Dx and other renderings of the test slices);
``python -m lungct lab safety-report --caution`` prints those rates again from the files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lungct.guard.density import PPCAGaussian
from lungct.guard.verdict import as_gray
from lungct.preprocess import resize_gray

CAUTION_FILE = "caution.safetensors"
LAYER = "blocks.3"
"""The feature depth of the rendering score. Measured on this data (ad-hoc, 128 px, int8):
blocks.3 alone put 100% of Lung-PET-CT-Dx slices above the val limit in the lung and the
mediastinal window, the three depths averaged (the guard's own recipe) 100% and 72%."""
PREFIX = "caution"
COMMAND = "python -m lungct guard caution"


def rendering_view(gray: np.ndarray, size: int) -> np.ndarray:
    """The whole slice as a full-view classifier sees it, at the extractor's side."""
    return resize_gray(as_gray(gray), size)


@dataclass
class RenderingCaution:
    """The rendering score's Gaussian and its limit per extractor precision."""

    gaussian: PPCAGaussian
    limits: dict[str, float]
    layer: str = LAYER

    def limit(self, precision: str) -> float:
        return float(self.limits.get(precision, self.limits.get("int8", np.inf)))

    def score(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        return self.gaussian.score(feats[self.layer])

    @classmethod
    def load(cls, folder: Path, card: dict, override: float | None = None
             ) -> "RenderingCaution | None":
        """The caution of a guard folder, or None when it has none (an older guard)."""
        from safetensors.numpy import load_file

        section = card.get("caution") or {}
        path = Path(folder) / CAUTION_FILE
        if not section or not path.exists():
            return None
        g = PPCAGaussian.from_tensors(load_file(str(path)), f"{PREFIX}.{section['layer']}")
        limits = {k: float(v) for k, v in section["limits"].items()}
        if override is not None:   # params.yaml ood.caution_limit stands for every precision
            limits = {k: float(override) for k in limits}
        return cls(g, limits, section["layer"])

    def save(self, folder: Path) -> Path:
        from safetensors.numpy import save_file
        path = Path(folder) / CAUTION_FILE
        save_file({k: np.ascontiguousarray(v)
                   for k, v in self.gaussian.tensors(f"{PREFIX}.{self.layer}").items()},
                  str(path))
        return path


def _rate(scores: np.ndarray, limit: float) -> dict:
    n = int(len(scores))
    k = int((scores > limit).sum())
    return {"n": n, "cautioned": k, "rate": round(k / n, 4) if n else None,
            "median_score": round(float(np.median(scores)), 2) if n else None}


def calibrate(guard, cfg: dict, external: str | Path | None = None,
              log: Callable[[str], None] = print,
              variants_of: Callable | None = None, params: dict | None = None) -> dict:
    """Fit the rendering score on IQ-OTH/NCCD grouped train, choose its limit on grouped
    val, measure it on the other sets; save it beside ``guard`` (its folder) and return the
    card section. ``variants_of(gray, seed)``: other renderings of a test slice to measure
    too (``lungct.lab.phantoms.other_source_variants``, which lives above the guard; the
    safety report passes it)."""
    from lungct.config import resolve
    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.data.splits import read_manifest
    from lungct.guard.features import EXTRACTOR_FILE, OnnxFeatureExtractor
    from lungct.preprocess import hu_window
    from lungct.preprocess import WINDOWS, load_image

    # the guard's merged ``ood`` settings (``guard_config``), passed in: the model imports this
    params = params if params is not None else (cfg.get("ood") or {})
    t0 = time.time()
    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    iq = {p: [load_image(root / r["path"]) for r in rows if r["grouped_split"] == p]
          for p in ("train", "val", "test")}
    if not iq["train"] or not iq["val"]:
        raise ValueError("the manifest has no grouped train/val rows: run `python -m lungct lab split`")
    size, pct = guard.size, float(params.get("caution_percentile", 99.0))

    def feats(extractor, grays: Sequence[np.ndarray]) -> np.ndarray:
        return extractor([rendering_view(g, size) for g in grays])[LAYER]

    ext = guard.extractor
    g = PPCAGaussian.fit(feats(ext, iq["train"]), int(params["components"]))
    caution = RenderingCaution(g, {})

    def scores(grays, extractor=ext):
        return g.score(feats(extractor, grays)) if len(grays) else np.zeros(0)

    val = scores(iq["val"])
    caution.limits[guard.precision] = float(np.percentile(val, pct))
    if guard.precision == "int8" and guard.folder is not None and (
            guard.folder / EXTRACTOR_FILE).exists():   # the fallback's limit, same rule
        f32 = OnnxFeatureExtractor(guard.folder / EXTRACTOR_FILE, guard.layers, size)
        caution.limits["float32"] = float(np.percentile(scores(iq["val"], f32), pct))
    limit = caution.limits[guard.precision]
    log(f"rendering score fitted on {len(iq['train'])} train slices; limit {limit:.3f} "
        f"({pct:g}th percentile of {len(val)} val slices, {guard.precision}; "
        f"{time.time() - t0:.0f} s)")

    report = {"iq_val": _rate(val, limit), "iq_test": _rate(scores(iq["test"]), limit)}
    variants = ([variants_of(x, seed=i) for i, x in enumerate(iq["test"])]
                if variants_of is not None else [])
    for j, (kind, _) in enumerate(variants[0] if variants else []):
        report[f"iq_test_{kind}"] = _rate(scores([v[j][1] for v in variants]), limit)
    ext_root = Path(external) if external else resolve(
        (cfg.get("data") or {}).get("external", "data/raw/lung-pet-ct-dx-sample"))
    dicom = read_all(ext_root) if ext_root.is_dir() else []
    if dicom:
        for name, (w, lvl) in {**WINDOWS, "file": (400.0, 40.0)}.items():
            grays = [hu_window(s.hu, w, lvl) for s in dicom]
            report[f"lung_pet_ct_dx_{name}"] = _rate(scores(grays), limit)
            png = [np.round(x * 255) / 255 for x in grays]   # the same slices as 8-bit PNG
            report[f"lung_pet_ct_dx_{name}_png"] = _rate(scores(png), limit)
    section = {"layer": LAYER, "view": "whole slice (what a full-view classifier sees)",
               "input_size": size, "components": int(params["components"]),
               "fit": f"IQ-OTH/NCCD grouped train ({len(iq['train'])} slices, no variants)",
               "rule": f"{pct:g}th percentile of IQ-OTH/NCCD grouped val scores",
               "percentile": pct, "limits": caution.limits, "precision": guard.precision,
               "report": report, "command": COMMAND,
               "seconds": round(time.time() - t0, 1)}
    if guard.folder is not None:
        caution.save(guard.folder)
        card_path = guard.folder / "guard.json"
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["caution"] = section
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        guard.card["caution"] = section
    guard.caution = caution
    return section


def print_report(section: dict, log: Callable[[str], None] = print) -> None:
    """The calibrated limit and the share of slices above it, per set."""
    limits = ", ".join(f"{k} {v:.2f}" for k, v in section["limits"].items())
    log(f"rendering caution: {section['rule']} (limit {limits}); fit on {section['fit']}")
    for name, r in section["report"].items():
        log(f"  {name:<42} {r['cautioned']:4d}/{r['n']:<4d} ({100 * (r['rate'] or 0):5.1f}%)"
            f"  median score {r['median_score']}")
