"""Clinical-safety figures in one command: ``python -m lungct lab safety-report``.

(or ``python -m lungct lab safety-report``).

Prints and writes ``reports/safety.json``:

1. the OOD guard's false rejection on the grouped **test** split (real lung
   CT slices it never saw, neither in fitting nor in choosing the threshold);
2. its rejection rate on a non-CT set, per category (scikit-image sample
   photos and scans, noise, blank, gradients, checkerboards, rendered
   documents, procedural chest-X-ray, brain-CT and abdominal-CT phantoms);
3. its pass rate on "other source" lung CTs: the test slices re-windowed,
   cropped, resized, saved as 8-bit screenshots with a border, plus pydicom's
   real CT_small.dcm;
4. ECE before/after temperature calibration of every shipped model (from
   the cards' ``calibration`` section, written by ``python -m lungct lab evaluate``);
5. memory (RSS) over 200 consecutive classifications + Grad-CAM heatmaps with
   the default model.

The images come from ``lungct.lab.phantoms``, the statistics from ``lungct.training.metrics``.
"""

from __future__ import annotations

import argparse

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lungct.config import REPO_ROOT, config_from_args, models_dir, reports_dir, resolve
from lungct.training.metrics import rate, wilson, wilson_text
from lungct.lab.phantoms import (OTHER_SOURCE_KINDS, ct_small, non_ct_set,  # noqa: F401
                             other_source_variants)
from lungct.resources import has_psutil, rss_mb

# ------------------------------------------------------------------ figures

def guard_figures(guard, cfg: dict, every: int = 1, log=print) -> dict:
    """False rejection on grouped test, non-CT rejection, other-source pass rate."""
    from lungct.data.splits import read_manifest
    from lungct.preprocess import load_image

    root = resolve(cfg["data"]["root"])
    rows = [r for r in read_manifest(resolve(cfg["data"]["manifest"]))
            if r["grouped_split"] == "test"]
    t0 = time.time()
    grays = [load_image(root / r["path"]) for r in rows]
    verdicts = guard.check_many(grays)
    rejected = [r["path"] for r, v in zip(rows, verdicts) if not v.in_distribution]
    out: dict = {"threshold": guard.threshold, "guard_card": {
        k: guard.card.get(k) for k in ("method", "fit", "threshold_selection")}}
    out["test_false_rejection"] = {
        "split": "grouped test", "n": len(rows), "rejected": len(rejected),
        "rate": rate(not v.in_distribution for v in verdicts),
        "ci95": wilson(len(rejected), len(rows)), "rejected_files": rejected,
        "max_score": round(max(v.score for v in verdicts), 4)}
    per_slice_ms = 1000 * (time.time() - t0) / max(len(rows), 1)
    log(f"grouped test: {len(rejected)}/{len(rows)} lung CT slices rejected "
        f"({100 * out['test_false_rejection']['rate']:.1f}%, "
        f"{wilson_text(not v.in_distribution for v in verdicts)})")

    non = non_ct_set()
    nv = guard.check_many([g for _, _, g in non])
    cats: dict[str, list] = {}
    for (cat, name, _), v in zip(non, nv):
        cats.setdefault(cat, []).append((name, v))
    out["non_ct_rejection"] = {
        "n": len(non), "rate": rate(not v.in_distribution for v in nv),
        "ci95": wilson(sum(not v.in_distribution for v in nv), len(nv)),
        "per_category": {c: {"n": len(items),
                             "rate": rate(not v.in_distribution for _, v in items),
                             "accepted": [n for n, v in items if v.in_distribution]}
                         for c, items in cats.items()},
        "min_score_over_threshold": round(min(v.score for v in nv) / guard.threshold, 3)}
    log(f"non-CT set: {sum(not v.in_distribution for v in nv)}/{len(non)} rejected "
        f"({100 * out['non_ct_rejection']['rate']:.1f}%, "
        f"{wilson_text(not v.in_distribution for v in nv)})")
    for c, d in out["non_ct_rejection"]["per_category"].items():
        extra = f"  accepted: {', '.join(d['accepted'])}" if d["accepted"] else ""
        log(f"  {c:22s} {100 * d['rate']:5.1f}% of {d['n']}{extra}")

    kinds: dict[str, list[bool]] = {}
    for i in range(0, len(grays), every):
        variants = other_source_variants(grays[i], seed=i)
        for (kind, _), v in zip(variants, guard.check_many([g for _, g in variants])):
            kinds.setdefault(kind, []).append(v.in_distribution)
    small = ct_small()
    small_v = guard.check_many([g for _, g in small]) if small else []
    all_flags = [f for fl in kinds.values() for f in fl]
    out["other_source_pass"] = {
        "source": f"grouped test slices (every {every}), each re-rendered per kind",
        "rate": rate(all_flags), "n": len(all_flags), "ci95": wilson(sum(all_flags),
                                                                      len(all_flags)),
        "per_kind": {k: {"n": len(fl), "rate": rate(fl)} for k, fl in kinds.items()},
        "ct_small_dcm": {name: v.as_dict() for (name, _), v in zip(small, small_v)}}
    log(f"other-source lung CTs: {100 * out['other_source_pass']['rate']:.1f}% of "
        f"{len(all_flags)} pass ({wilson_text(all_flags)})")
    for k, d in out["other_source_pass"]["per_kind"].items():
        log(f"  {k:30s} {100 * d['rate']:5.1f}% of {d['n']}")
    for (name, _), v in zip(small, small_v):
        log(f"  {name:30s} {'pass' if v.in_distribution else 'rejected'} "
            f"(score {v.score:.2f}, threshold {v.threshold:.2f})")
    out["guard_ms_per_slice"] = round(per_slice_ms, 1)
    return out


def calibration_figures(log=print) -> dict:
    """ECE before/after temperature scaling, from every shipped model's card."""
    from lungct.models import list_shipped
    from lungct.models.checkpoint import read_card

    out = {}
    for name in list_shipped():
        card = read_card(models_dir() / name)
        cal = card.get("calibration")
        if not cal:
            out[name] = None
            log(f"  {name:26s} not evaluated yet (python -m lungct lab evaluate --model {name})")
            continue
        out[name] = {"temperature": cal.get("temperature"), "ece_before": cal.get("ece_before"),
                     "ece_after": cal.get("ece_after"),
                     "evaluated_on": card.get("evaluated_on")}
        log(f"  {name:26s} T={cal.get('temperature'):.3f}  ECE {cal.get('ece_before'):.4f} -> "
            f"{cal.get('ece_after'):.4f}")
    return out


def memory_figures(cfg: dict, iterations: int = 200, guard=None, log=print) -> dict:
    """RSS over ``iterations`` consecutive classifications + Grad-CAM heatmaps (+ guard)."""
    import gc

    from lungct.explain import explain
    from lungct.inference import Classifier
    from lungct.models import list_shipped, load_model
    from lungct.preprocess import decode_image

    name = cfg.get("app", {}).get("default_model", "student_kd")
    shipped = list_shipped()
    if name not in shipped:
        if not shipped:
            log("  no shipped model: memory test skipped")
            return {"skipped": "no shipped model"}
        log(f"  default model {name!r} not shipped yet: using {shipped[0]!r}")
        name = shipped[0]
    files = sorted((REPO_ROOT / "samples").glob("*.jpg"))
    blobs = [f.read_bytes() for f in files]
    clf = Classifier(load_model(name), cfg.get("app", {}).get("unsure_below", 0.6))
    gc.collect()
    start = rss_mb()
    trace, peak = [], start
    t0 = time.time()
    for i in range(iterations):
        data = blobs[i % len(blobs)]
        gray = decode_image(data)
        if guard is not None:
            guard.check(gray)
        clf.predict_gray(gray).as_dict()
        explain(clf.model, gray)
        rss = rss_mb()
        peak = max(peak, rss)
        trace.append(round(rss, 1))
    gc.collect()
    end = rss_mb()
    half = trace[len(trace) // 2:]
    out = {"model": name, "iterations": iterations, "with_guard": guard is not None,
           "rss_start_mb": round(start, 1), "rss_after_first_mb": trace[0] if trace else None,
           "rss_end_mb": round(end, 1), "rss_peak_mb": round(peak, 1),
           "growth_second_half_mb": round(half[-1] - half[0], 1) if half else None,
           "seconds_per_iteration": round((time.time() - t0) / iterations, 3),
           "rss_every_20": trace[::20],
           "rss_source": "psutil" if has_psutil() else "/proc/self/status VmRSS"}
    log(f"  {name}: {iterations} x (decode + guard + classify + Grad-CAM): RSS start "
        f"{out['rss_start_mb']} MB, after the first {out['rss_after_first_mb']} MB, end "
        f"{out['rss_end_mb']} MB, peak {out['rss_peak_mb']} MB, growth over the second half "
        f"{out['growth_second_half_mb']} MB "
        f"({out['seconds_per_iteration']} s/iteration)")
    return out


def recompression_figures(cfg: dict, qualities=(95, 85, 75), every: int = 1, log=print) -> dict:
    """How the default model's answer moves when a test slice is re-saved as JPEG.

    Uploads are often re-compressed (messaging apps, PACS exports, screenshots);
    the guard passes them (they are lung CT slices), so the classifier must be
    stable under it. Per quality: label agreement with the original file, mean
    and max change of any class probability, malignant -> other flips.
    """
    from lungct.data.splits import read_manifest
    from lungct.inference import Classifier
    from lungct.models import list_shipped, load_model
    from lungct.preprocess import decode_image, load_image

    name = cfg.get("app", {}).get("default_model", "student_kd")
    shipped = list_shipped()
    if name not in shipped:
        if not shipped:
            return {"skipped": "no shipped model"}
        name = shipped[0]
    clf = Classifier(load_model(name), cfg.get("app", {}).get("unsure_below", 0.6))
    root = resolve(cfg["data"]["root"])
    rows = [r for r in read_manifest(resolve(cfg["data"]["manifest"]))
            if r["grouped_split"] == "test"][::every]
    grays = [load_image(root / r["path"]) for r in rows]
    base = np.array([[p.probabilities[c] for c in clf.classes] for p in clf.predict_many(grays)])
    out = {"model": name, "n": len(rows), "source": "grouped test slices re-saved as 8-bit JPEG",
           "per_quality": {}}
    mal = list(clf.classes).index("malignant") if "malignant" in clf.classes else None
    for q in qualities:
        probs = np.array([[p.probabilities[c] for c in clf.classes]
                          for p in clf.predict_many([decode_image(_jpeg_bytes(g, q))
                                                     for g in grays])])
        same = base.argmax(1) == probs.argmax(1)
        delta = np.abs(probs - base).max(1)
        flips = (int(((base.argmax(1) == mal) & (probs.argmax(1) != mal)).sum())
                 if mal is not None else None)
        out["per_quality"][str(q)] = {
            "label_agreement": rate(same), "mean_max_abs_dp": round(float(delta.mean()), 4),
            "max_abs_dp": round(float(delta.max()), 4), "malignant_to_other": flips}
        log(f"  {name}: JPEG q{q}: same label {100 * float(same.mean()):.1f}% of {len(rows)}, "
            f"mean |dp| {delta.mean():.3f}, max |dp| {delta.max():.3f}, "
            f"malignant -> other: {flips}")
    return out


CROP_DEPTHS = (10, 30, 50)
"""How far (input pixels) ``crop_figures`` cuts into the body."""
CROP_SIDES = ("left", "right", "top", "bottom", "all")
"""Where ``crop_into_body`` cuts; "all": every side at once (only the chest is left)."""


def crop_into_body(gray: np.ndarray, body_box: tuple[int, int, int, int], side: str,
                   depth: int) -> np.ndarray:
    """``gray`` cut ``depth`` pixels inside its body's box (y0, x0, y1, x1) on ``side``: the
    slice as teaching files and web pages show it, cropped into the body, so the lungs
    (and the body) run into the image edge there."""
    y0, x0, y1, x1 = body_box
    h, w = gray.shape
    top, left = (y0 + depth, x0 + depth) if side == "all" else (0, 0)
    bottom, right = (y1 - depth, x1 - depth) if side == "all" else (h, w)
    top = y0 + depth if side == "top" else top
    left = x0 + depth if side == "left" else left
    bottom = y1 - depth if side == "bottom" else bottom
    right = x1 - depth if side == "right" else right
    return np.ascontiguousarray(gray[top:bottom, left:right])


def crop_figures(guard, slices, depths=CROP_DEPTHS, sides=CROP_SIDES) -> dict:
    """Accepted / total of slices cut into the body per depth and side (``crop_into_body``).

    ``slices``: (gray, body_box) pairs; a body box of None is the segmentation's of the
    uncropped slice. ``plain`` counts the uncropped slices' own verdicts."""
    from lungct.lungs import segment

    keys = [f"{d}px {s}" for d in depths for s in sides]
    out: dict = {"plain": [0, 0], "crops": {k: [0, 0] for k in keys}}
    for g, box in slices:
        box = box if box is not None else segment(g).body_box
        crops = [crop_into_body(g, box, s, d) for d in depths for s in sides] if box else []
        verdicts = guard.check_many([g] + crops)
        for key, v in zip(["plain"] + (keys if crops else []), verdicts):
            tally = out["plain"] if key == "plain" else out["crops"][key]
            tally[0] += int(v.accepted)
            tally[1] += 1
    return out


def crop_sources(cfg: dict, external: str | Path | None = None, every: int = 1) -> dict:
    """{name: [(decoded slice, body box or None)]} to cut: the Lung-PET-CT-Dx lung slices
    (``hu_shows_lung``) in the lung window, read as users load them, their body box from the
    Hounsfield units (``hu_body``); and IQ-OTH/NCCD's grouped-test slices when the dataset
    is there (``LUNGCT_DATA``; no HU there: the segmentation's body box)."""
    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.data.splits import read_manifest
    from lungct.guard.anatomy import hu_body, hu_shows_lung
    from lungct.lungs import bbox
    from lungct.preprocess import load_image

    out = {}
    ext = Path(external) if external else resolve(cfg["data"].get("external", ""))
    lung = [s for s in read_all(ext) if hu_shows_lung(s.hu)][::every]
    if lung:
        out["Lung-PET-CT-Dx lung slices"] = [(load_image(s.path, window="lung"),
                                              bbox(hu_body(s.hu))) for s in lung]
    root, manifest = resolve(cfg["data"]["root"]), resolve(cfg["data"]["manifest"])
    if root.is_dir() and manifest.exists():
        rows = [r for r in read_manifest(manifest) if r["grouped_split"] == "test"][::every]
        out["IQ-OTH/NCCD grouped test"] = [(load_image(root / r["path"]), None) for r in rows]
    return out


def print_crop_figures(name: str, fig: dict, log=print) -> None:
    a, n = fig["plain"]
    tallies = list(fig["crops"].values())
    ca, cn = sum(t[0] for t in tallies), sum(t[1] for t in tallies)
    log(f"{name}: uncropped {a}/{n} accepted; cropped into the body {ca}/{cn} "
        f"({100 * ca / max(cn, 1):.1f}%)")
    for key, (a, n) in fig["crops"].items():
        log(f"  {key:<12} {a:4d}/{n:<4d} ({100 * a / max(n, 1):5.1f}%)")


def caution_figures(guard, cfg: dict, external: str | Path | None = None, every: int = 1,
                    log=print) -> dict:
    """Share of accepted slices whose answer carries the rendering caution, through the
    guard as shipped (``check_many``, the pipeline's own call): IQ-OTH/NCCD grouped test
    (plain and re-rendered as other sources do) and Lung-PET-CT-Dx in each window, as
    DICOM renderings and as 8-bit PNG."""
    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.data.splits import read_manifest
    from lungct.preprocess import hu_window
    from lungct.preprocess import WINDOWS, load_image

    if guard.caution is None:
        raise ValueError("this guard has no rendering caution: `python -m lungct guard caution`")
    root = resolve(cfg["data"]["root"])
    rows = [r for r in read_manifest(resolve(cfg["data"]["manifest"]))
            if r["grouped_split"] == "test"][::every]
    test = [load_image(root / r["path"]) for r in rows]
    sets = {"iq_othnccd_test": test}
    variants = [other_source_variants(g, seed=i) for i, g in enumerate(test)]
    for j, (kind, _) in enumerate(variants[0] if variants else []):
        sets[f"iq_othnccd_test_{kind}"] = [v[j][1] for v in variants]
    ext = Path(external) if external else resolve(
        (cfg.get("data") or {}).get("external", "data/raw/lung-pet-ct-dx-sample"))
    dicom = read_all(ext)[::every] if ext.is_dir() else []
    for name, (w, lvl) in WINDOWS.items():
        if dicom:
            grays = [hu_window(d.hu, w, lvl) for d in dicom]
            sets[f"lung_pet_ct_dx_{name}"] = grays
            sets[f"lung_pet_ct_dx_{name}_png"] = [np.round(g * 255) / 255 for g in grays]
    out = {"limit": guard.caution.limit(guard.precision), "precision": guard.precision,
           "rule": (guard.card.get("caution") or {}).get("rule"), "sets": {}}
    log(f"rendering caution limit {out['limit']:.3f} ({guard.precision}; {out['rule']})")
    for name, grays in sets.items():
        verdicts = [v for v in guard.check_many(grays) if v.accepted]
        flags = [v.rendering_score is not None and v.rendering_score > v.rendering_limit
                 for v in verdicts]
        k = sum(flags)
        out["sets"][name] = {"accepted": len(flags), "cautioned": int(k), "rate": rate(flags),
                             "ci95": wilson(k, len(flags))}
        log(f"  {name:<42} {k:4d}/{len(flags):<4d} accepted slices cautioned "
            f"({100 * k / max(len(flags), 1):5.1f}%, {wilson_text(flags)})")
    return out


def _jpeg_bytes(gray: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8)).save(
        buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def add_arguments(parser) -> None:
    parser.add_argument("--out", help="JSON path (default: reports/safety.json)")
    parser.add_argument("--every", type=int, default=1,
                        help="use every N-th test slice for the other-source set and --crops "
                             "(default 1)")
    parser.add_argument("--iterations", type=int, default=200, help="memory test iterations")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--crops", action="store_true",
                        help="only the guard's acceptance of lung slices cut 10, 30 and 50 px "
                             "into the body on each side (Lung-PET-CT-Dx lung slices, and "
                             "IQ-OTH/NCCD grouped test when LUNGCT_DATA is set); prints, "
                             "writes nothing")
    parser.add_argument("--caution", action="store_true",
                        help="only the rendering caution's rates (accepted slices whose answer "
                             "is cautioned): IQ-OTH/NCCD grouped test, its other-source "
                             "renderings, Lung-PET-CT-Dx in each window as DICOM and PNG; prints, "
                             "writes nothing")
    parser.add_argument("--data", help="Lung-PET-CT-Dx folder for --crops and --caution (default: params "
                                       "data.external)")
    parser.set_defaults(func=cmd_safety_report)


def cmd_crops(args, cfg: dict) -> int:
    from lungct.guard import InputGuard

    guard = InputGuard.load(cfg=cfg)
    sources = crop_sources(cfg, args.data, max(1, args.every))
    if not sources:
        raise ValueError("no slices to cut: give --data (Lung-PET-CT-Dx) or set LUNGCT_DATA")
    for name, slices in sources.items():
        print_crop_figures(name, crop_figures(guard, slices))
    return 0


def cmd_safety_report(args) -> int:
    from lungct.guard import GuardLoadError, load_guard

    cfg = config_from_args(args)
    if args.crops:
        return cmd_crops(args, cfg)
    if args.caution:
        caution_figures(load_guard(cfg=cfg), cfg, args.data, max(1, args.every))
        return 0
    report: dict = {"created": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        guard = load_guard(cfg=cfg)
    except GuardLoadError as err:
        print(f"== OOD guard: {err} ==")
        guard = None
        report["guard"] = {"skipped": str(err)}
    if not args.skip_memory:  # first, so the figures are those of a fresh app-like process
        print(f"== memory over {args.iterations} classifications + heatmaps ==")
        report["memory"] = memory_figures(cfg, args.iterations, guard)
    if guard is not None:
        print(f"== OOD guard: threshold {guard.threshold:.4f} ==")
        report["guard"] = guard_figures(guard, cfg, every=max(1, args.every),
                                        log=lambda s: print("  " + s))
    print("== calibration: ECE before -> after temperature scaling "
          "(model cards, own test split) ==")
    report["calibration"] = calibration_figures()
    print("== stability of the default model under JPEG re-compression ==")
    report["recompression"] = recompression_figures(cfg, every=max(1, args.every))
    reports = reports_dir(cfg)
    out = Path(args.out) if args.out else reports / "safety.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def add_command(sub, common) -> None:
    """Register ``safety-report`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("safety-report", parents=[common], help="clinical-safety figures: guard rejections, calibration, memory",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
