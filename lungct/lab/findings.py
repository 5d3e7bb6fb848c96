"""Fit and measure the findings layer (``lungct.findings``) on real tumour boxes.

Data it may fit on: the Lung-PET-CT-Dx sample (two patients, 38 tumour boxes; every
lung slice without a box counts as a slice with no tumour, which holds for these
two single-mass patients) and IQ-OTH/NCCD *normal* slices of the grouped split's
training and validation parts (no lesion boxes exist there; a normal slice has no
finding to make). Reported as the guard was: fitted on one patient (plus the
normal slices) and measured on the other, both ways; never tuned on the patient
it reports. The shipped scorer is then fitted on both patients.

    python -m lungct lab findings            # the figures, both ways, and the shipped scorer's
    python -m lungct lab findings --write    # refit and write models/findings/
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungct.findings import FEATURES, SCORER_DIR, Finding, Scorer, candidates

POINT_TOLERANCE = 15
"""Pixels around a box that still count as a pointing-game hit (as ``lungct lab pointing``)."""
FP_RATES = (0.5, 1.0, 2.0)
"""False findings per slice at which the FROC sensitivity is read."""
SCORER_FEATURES = ("thickness_mm", "log_area", "solidity", "rel_area", "enclosure")
"""The shipped scorer's features: shape and size only. With density, its spread and the
position too, the fit ranked the two patients' tumours higher (24/38 against 19/38, fitted
on one patient and reported on the other) but learnt the sources, not lesions: every
tumour box comes from Lung-PET-CT-Dx and every normal slice from IQ-OTH/NCCD, whose 8-bit
renderings give other densities, and it scores the test phantom's round 30 mm solid
nodule 0.18, below its threshold (shipped set: 0.86, above). README, Findings."""
NORMAL_FP_GOAL = 0.5
"""False findings per IQ-OTH/NCCD normal slice the shipped threshold may cost, at most."""


@dataclass
class SliceCands:
    """One slice's candidates (unscored features) and its truth."""

    source: str          # "lpcd" or "iq"
    group: str           # Lung-PET-CT-Dx patient, or the IQ-OTH/NCCD split part
    key: str
    boxes: list
    cands: list[Finding]
    label: str = ""      # IQ-OTH/NCCD: the slice's class
    path: str = ""       # the file


def _in_box(f: Finding, boxes, tol: int = 0) -> bool:
    x, y = f.centroid
    return any(x0 - tol <= x <= x1 + tol and y0 - tol <= y <= y1 + tol
               for x0, y0, x1, y1 in boxes)


def collect_lpcd(root) -> list[SliceCands]:
    """Candidates of every Lung-PET-CT-Dx slice that shows lung, as users' DICOM decodes,
    with each series' 3D lung regions (``series_regions``), as ``case`` and the Study page
    run a series."""
    import pydicom

    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.findings import series_regions
    from lungct.guard.anatomy import hu_shows_lung
    from lungct.lungs import segment
    from lungct.preprocess import load_image

    by_series: dict[str, list] = {}
    for s in read_all(root):
        by_series.setdefault(s.series, []).append(s)
    out = []
    for series in by_series.values():
        series.sort(key=lambda s: s.z)
        views = []
        for s in series:
            ds = pydicom.dcmread(s.path, stop_before_pixels=True)
            spacing = float(ds.PixelSpacing[0]) if "PixelSpacing" in ds else None
            gray = load_image(s.path, window="lung")
            views.append((gray, segment(gray), spacing, True))
        regions = series_regions(views, [s.z for s in series])
        for s, (gray, seg, spacing, hu), region in zip(series, views, regions):
            if not hu_shows_lung(s.hu):
                continue
            out.append(SliceCands("lpcd", s.patient, f"{s.series}/{s.index}", list(s.boxes),
                                  candidates(gray, seg, spacing, hu=True, region3d=region),
                                  path=s.path))
    return out


def collect_iq(data_root, splits_csv, labels: tuple[str, ...] = ("normal",),
               parts: tuple[str, ...] = ("train", "val", "test")) -> list[SliceCands]:
    """Candidates of IQ-OTH/NCCD slices (by default the normal ones), grouped by their
    grouped-split part; ``key`` is the file's path in the manifest."""
    import csv

    from lungct.lungs import segment
    from lungct.preprocess import load_image

    out = []
    with open(splits_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] not in labels or row["grouped_split"] not in parts:
                continue
            gray = load_image(Path(data_root) / row["path"])
            out.append(SliceCands("iq", row["grouped_split"], row["path"], [],
                                  candidates(gray, segment(gray), None, hu=False),
                                  row["label"]))
    return out


def fit_scorer(slices: list[SliceCands], c: float = 1.0,
               features: tuple[str, ...] = SCORER_FEATURES) -> Scorer:
    """Logistic regression over ``FEATURES``: candidates whose centroid lies in a tumour box
    (15 px tolerance) against every other candidate; classes balanced. Threshold: the
    lowest score that keeps both (a) false findings on the fit's normal slices at most
    ``NORMAL_FP_GOAL / 2`` per slice and (b) on the fit patients' slices without a box
    at most 1 per slice."""
    from sklearn.linear_model import LogisticRegression

    x, y = [], []
    for s in slices:
        for f in s.cands:
            x.append([f.features[k] for k in features])
            y.append(_in_box(f, s.boxes, POINT_TOLERANCE))
    x, y = np.asarray(x, float), np.asarray(y, bool)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    lr.fit((x - mean) / scale, y)
    scorer = Scorer(tuple(mean.tolist()), tuple(scale.tolist()), tuple(lr.coef_[0].tolist()),
                    float(lr.intercept_[0]), 1.0, tuple(features))
    normal = [s for s in slices if s.source == "iq"]
    unboxed = [s for s in slices if s.source == "lpcd" and not s.boxes]
    limits = [(normal, NORMAL_FP_GOAL / 2), (unboxed, 1.0)]
    threshold = 0.0
    for group, per_slice in limits:
        if not group:
            continue
        scores = np.sort(np.concatenate([scorer.score([f.features for f in s.cands])
                                         for s in group] + [np.zeros(0)]))[::-1]
        allowed = int(per_slice * len(group))
        if allowed < len(scores):
            threshold = max(threshold, float(scores[allowed]) + 1e-9)
    return Scorer(scorer.mean, scorer.scale, scorer.coef, scorer.intercept,
                  round(min(threshold, 0.999999), 6), tuple(features))


def _scored(scorer: Scorer, s: SliceCands) -> list[Finding]:
    for f, v in zip(s.cands, scorer.score([f.features for f in s.cands])):
        f.score = float(v)
    return sorted(s.cands, key=lambda f: -f.score)


def measure(scorer: Scorer, slices: list[SliceCands]) -> dict:
    """The findings layer's figures on ``slices`` (one patient's, or normal slices)."""
    from sklearn.metrics import roc_auc_score

    from lungct.training.metrics import wilson

    boxed = [s for s in slices if s.boxes]
    unboxed = [s for s in slices if not s.boxes]
    ranked = {s.key: _scored(scorer, s) for s in slices}
    out: dict = {"slices": len(slices), "boxed_slices": len(boxed),
                 "threshold": scorer.threshold}
    t = scorer.threshold
    fp_unboxed = sum(sum(f.score >= t for f in ranked[s.key]) for s in unboxed)
    out["false_findings_per_slice_unboxed"] = round(fp_unboxed / max(len(unboxed), 1), 3)
    if not boxed:
        return out
    hits = sum(bool(ranked[s.key]) and _in_box(ranked[s.key][0], s.boxes, POINT_TOLERANCE)
               for s in boxed)
    out["pointing_game"] = round(hits / len(boxed), 4)
    out["pointing_hits"] = f"{hits}/{len(boxed)}"
    out["pointing_ci95"] = [round(v, 4) for v in wilson(hits, len(boxed))]
    # FROC: every candidate of every slice of this patient, swept by score
    events = []   # (score, is_tp, slice key)
    for s in slices:
        for f in ranked[s.key]:
            events.append((f.score, bool(s.boxes) and _in_box(f, s.boxes), s.key))
    events.sort(key=lambda e: -e[0])
    found, fps, froc = set(), 0, {}
    curve = []
    for score, tp, key in events:
        if tp:
            found.add(key)
        else:
            fps += 1
        curve.append((fps / len(slices), len(found) / len(boxed)))
    for rate in FP_RATES:
        froc[str(rate)] = round(max([sens for fp, sens in curve if fp <= rate] + [0.0]), 4)
    out["froc_sensitivity"] = froc
    out["sensitivity_at_threshold"] = round(
        sum(any(f.score >= t and _in_box(f, s.boxes) for f in ranked[s.key]) for s in boxed)
        / len(boxed), 4)
    top = [ranked[s.key][0].score if ranked[s.key] else 0.0 for s in slices]
    out["tumour_vs_other_auc"] = round(float(roc_auc_score([bool(s.boxes) for s in slices],
                                                           top)), 4)
    return out


def report(lpcd: list[SliceCands], iq: list[SliceCands],
           features: tuple[str, ...] = SCORER_FEATURES) -> dict:
    """Fit on one patient (plus IQ-OTH/NCCD normal train/val slices), measure on the other,
    both ways; then the scorer fitted on both, measured on the normal test slices."""
    patients = sorted({s.group for s in lpcd})
    normal_fit = [s for s in iq if s.group in ("train", "val")]
    normal_test = [s for s in iq if s.group == "test"]
    out = {"ways": {}}
    for held in patients:
        fit_on = [s for s in lpcd if s.group != held] + normal_fit
        scorer = fit_scorer(fit_on, features=features)
        res = measure(scorer, [s for s in lpcd if s.group == held])
        res["normal_test_false_findings_per_slice"] = measure(scorer, normal_test)[
            "false_findings_per_slice_unboxed"] if normal_test else None
        out["ways"][f"fit {'+'.join(p for p in patients if p != held)} -> report {held}"] = res
    shipped = fit_scorer(lpcd + normal_fit, features=features)
    out["shipped"] = {"scorer": shipped.as_dict(),
                      "normal_test_false_findings_per_slice":
                          measure(shipped, normal_test)["false_findings_per_slice_unboxed"]
                          if normal_test else None,
                      "lpcd_fitted_on (not a test)": measure(shipped, lpcd)}
    return out


def write_scorer(folder: Path, rep: dict, seconds_per_slice: float) -> None:
    """models/findings/: scorer.json (what the product loads), card.json (the figures),
    README.md (the card in words)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scorer.json").write_text(json.dumps(rep["shipped"]["scorer"], indent=1) + "\n")
    card = {"name": SCORER_DIR, "kind": "findings scorer (logistic regression over candidate "
            "features)", "features": list(FEATURES),
            "fitted_on": "Lung-PET-CT-Dx sample A0001 + A0002 (38 tumour boxes), IQ-OTH/NCCD "
                         "normal slices of the grouped split's train and val parts",
            "intended_use": "candidates of focal abnormal tissue in the lung fields, shown "
                            "beside the classifier's heatmap; not a diagnosis",
            "ms_per_slice": round(seconds_per_slice * 1000, 1),
            "figures": {"ways": rep["ways"], "verdict_check": rep.get("verdict_check"),
                        "normal_test_false_findings_per_slice":
                            rep["shipped"]["normal_test_false_findings_per_slice"]}}
    (folder / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    lines = ["# findings scorer", "", f"Features: {', '.join(card['features'])}.", "",
             "Scores candidates of focal abnormal tissue in the lung fields "
             "(`lungct/findings.py`). Candidates of focal abnormal tissue, not a diagnosis.",
             "", f"Fitted by `python -m lungct lab findings --write` on {card['fitted_on']}.",
             "", "| fitted on -> reported on | pointing game | sensitivity at 0.5 / 1 / 2 false "
             "per slice | false per slice without tumour | tumour-vs-other AUC | false per "
             "IQ-OTH/NCCD normal test slice |", "|---|---|---|---|---|---|"]
    for way, r in rep["ways"].items():
        froc = r.get("froc_sensitivity", {})
        lines.append(f"| {way} | {r.get('pointing_hits')} ({r.get('pointing_game', 0):.0%}) | "
                     + " / ".join(f"{froc.get(str(k), 0):.0%}" for k in FP_RATES)
                     + f" | {r['false_findings_per_slice_unboxed']:.2f} | "
                       f"{r.get('tumour_vs_other_auc', float('nan')):.3f} | "
                       f"{r['normal_test_false_findings_per_slice']} |")
    for where, r in (rep.get("verdict_check") or {}).items():
        lines.append("")
        lines.append(f"{where}, {r['slices']} slices, AUC: "
                     + "; ".join(f"{k} {v:.3f}" for k, v in r["auc"].items()))
    lines += ["", f"Shipped threshold {rep['shipped']['scorer']['threshold']:.4f}; false "
              f"findings per IQ-OTH/NCCD normal test slice "
              f"{rep['shipped']['normal_test_false_findings_per_slice']}; "
              f"{card['ms_per_slice']} ms per slice to decode, segment and find candidates in the fit "
              "run (this machine).", ""]
    (folder / "README.md").write_text("\n".join(lines))


def add_command(sub, common) -> None:
    p = sub.add_parser("findings", parents=[common],
                       help="fit and measure the findings scorer (Lung-PET-CT-Dx boxes, "
                            "IQ-OTH/NCCD normal slices)")
    p.add_argument("--data", help="Lung-PET-CT-Dx folder (default: params data.external)")
    p.add_argument("--features", nargs="+", choices=FEATURES, default=list(SCORER_FEATURES),
                   help="candidate features the scorer uses (default: shape and size only)")
    p.add_argument("--verdict", action="store_true",
                   help="also: does combining P(malignant) with the findings rank tumour slices "
                        "higher? (the default model, guard on)")
    p.add_argument("--write", action="store_true",
                   help="write the scorer fitted on both patients to models/findings/")
    p.set_defaults(func=cmd_findings)


def cmd_findings(args) -> int:
    import sys

    from lungct.config import config_from_args, models_dir, resolve

    cfg = config_from_args(args)
    root = resolve(args.data or cfg["data"].get("external", "data/raw/lung-pet-ct-dx-sample"))
    t0 = time.perf_counter()
    lpcd = collect_lpcd(root)
    n = len(lpcd)
    if not any(s.boxes for s in lpcd):
        print(f"error: no Lung-PET-CT-Dx tumour boxes under {root} (set data.external or "
              "--data)", file=sys.stderr)
        return 2
    iq_root = cfg["data"].get("root")
    iq = []
    if iq_root and resolve(iq_root).is_dir():
        iq = collect_iq(resolve(iq_root), resolve(cfg["data"]["manifest"]))
        n += len(iq)
    else:
        print("IQ-OTH/NCCD not found (LUNGCT_DATA): no normal slices; fitted on tumour "
              "patients only", file=sys.stderr)
    per_slice = (time.perf_counter() - t0) / max(n, 1)
    rep = report(lpcd, iq, tuple(args.features))
    print(f"features: {', '.join(args.features)}")
    print(f"{len(lpcd)} Lung-PET-CT-Dx lung slices ({sum(bool(s.boxes) for s in lpcd)} with a "
          f"tumour box), {len(iq)} IQ-OTH/NCCD normal slices; decode + segmentation + "
          f"candidates {per_slice * 1000:.1f} ms per slice")
    for way, r in rep["ways"].items():
        froc = r.get("froc_sensitivity", {})
        print(f"{way}: pointing {r['pointing_hits']} = {r['pointing_game']:.1%} "
              f"(95% CI {r['pointing_ci95'][0]:.0%}-{r['pointing_ci95'][1]:.0%}); FROC "
              + ", ".join(f"{froc[str(k)]:.0%} at {k}" for k in FP_RATES)
              + f" false/slice; at threshold {r['threshold']:.3f}: sensitivity "
                f"{r['sensitivity_at_threshold']:.0%}, {r['false_findings_per_slice_unboxed']:.2f}"
                f" false/slice without tumour, {r['normal_test_false_findings_per_slice']} per "
                f"IQ-OTH/NCCD normal test slice; tumour-vs-other AUC "
                f"{r['tumour_vs_other_auc']:.3f}")
    sh = rep["shipped"]
    print(f"shipped scorer (fitted on both patients): threshold {sh['scorer']['threshold']:.4f}, "
          f"{sh['normal_test_false_findings_per_slice']} false findings per IQ-OTH/NCCD normal "
          "test slice")
    if args.verdict:
        from lungct.guard import load_guard
        from lungct.inference import Classifier

        if not iq:
            print("error: --verdict needs IQ-OTH/NCCD (LUNGCT_DATA)", file=sys.stderr)
            return 2
        iq_test = collect_iq(resolve(iq_root), resolve(cfg["data"]["manifest"]),
                             labels=("normal", "benign", "malignant"), parts=("test",))
        clf = Classifier.from_name(cfg["app"]["default_model"], cfg["app"]["unsure_below"],
                                   cfg=cfg)
        check = verdict_check(lpcd, iq_test, resolve(iq_root),
                              [s for s in iq if s.group in ("train", "val")], clf,
                              load_guard(cfg=cfg))
        rep["verdict_check"] = check
        for where, r in check.items():
            print(f"{where}, {r['slices']} slices, AUC: "
                  + "; ".join(f"{k} {v:.3f}" for k, v in r["auc"].items()))
    if args.write:
        folder = models_dir(cfg) / SCORER_DIR
        write_scorer(folder, rep, per_slice)
        print(f"wrote {folder}")
    return 0


MIN_FINDING_MM = 10.0
"""The "malignant only with a finding of at least this size" rule's size (DICOM only)."""


def _malignant_probabilities(clf, guard, paths: list[str]) -> dict[str, float]:
    """P(malignant) of each file as users get it (the case pipeline, guard on, no findings);
    refused slices are left out."""
    from lungct.pipeline import run_case

    out = {}
    folders: dict[str, list[str]] = {}
    for path in paths:   # a DICOM folder is a series: one run each
        folders.setdefault(str(Path(path).parent), []).append(path)
    for part in folders.values():
        for start in range(0, len(part), 64):
            chunk = part[start:start + 64]
            for r in run_case(chunk, clf, guard, findings=None).slices:
                if r.ok:   # the pipeline orders slices anatomically: match by file
                    out[str(r.name)] = r.malignant_probability
    return out


def verdict_check(lpcd: list[SliceCands], iq_test: list[SliceCands], iq_root: Path,
                  normal_fit: list[SliceCands], clf, guard) -> dict:
    """Does combining the classifier with the findings rank tumour slices higher?

    Tumour-vs-other-slice AUC on Lung-PET-CT-Dx (scorer fitted on the other patient) and
    malignant-vs-other AUC on IQ-OTH/NCCD's grouped test part (scorer fitted on both
    patients and the normal train/val slices), for P(malignant) alone, the top
    finding's score alone, their product, and P(malignant) kept only where a finding of at
    least ``MIN_FINDING_MM`` (8-bit: any finding) lies.
    """
    from sklearn.metrics import roc_auc_score

    def rules(p, top, big):
        return {"P(malignant)": p, "top finding score": top,
                "P(malignant) x top finding score": p * top,
                f"P(malignant) if a finding >= {MIN_FINDING_MM:g} mm": p * big}

    def table(rows):
        y = [r[0] for r in rows]
        if len(set(y)) < 2:
            return {}
        names = rules(0.0, 0.0, 0.0).keys()
        return {n: round(float(roc_auc_score(y, [rules(*r[1:])[n] for r in rows])), 4)
                for n in names}

    out = {}
    patients = sorted({s.group for s in lpcd})
    probs = _malignant_probabilities(clf, guard, [s.path for s in lpcd])
    rows = []
    for held in patients:
        scorer = fit_scorer([s for s in lpcd if s.group != held] + normal_fit)
        for s in (s for s in lpcd if s.group == held and s.path in probs):
            ranked = _scored(scorer, s)
            kept = [f for f in ranked if f.score >= scorer.threshold]
            big = any((f.diameter_mm or 0) >= MIN_FINDING_MM for f in kept)
            rows.append((bool(s.boxes), probs[s.path], ranked[0].score if ranked else 0.0,
                         float(big)))
    out["lung_pet_ct_dx (tumour vs other slices; scorer fitted on the other patient)"] = {
        "slices": len(rows), "auc": table(rows)}
    scorer = fit_scorer(lpcd + normal_fit)
    files = [str(iq_root / s.key) for s in iq_test]
    probs = _malignant_probabilities(clf, guard, files)
    rows = []
    for s, path in zip(iq_test, files):
        if path not in probs:
            continue
        ranked = _scored(scorer, s)
        kept = [f for f in ranked if f.score >= scorer.threshold]
        rows.append((s.label == "malignant", probs[path], ranked[0].score if ranked else 0.0,
                     float(bool(kept))))
    out["iq_othnccd grouped test (malignant vs other slices)"] = {"slices": len(rows),
                                                                  "auc": table(rows)}
    return out
