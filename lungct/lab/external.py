"""External evaluation: how a shipped model and the guard do on another source's chest CT.

    python -m lungct lab external DIR [--model NAME] [--json] [--write-card]

Two layouts:

- **class folders**: ``DIR/<class>/...`` images or DICOM; folder names map
  to classes (``normal``, ``benign``, ``malignant``; carcinoma types such as
  adenocarcinoma, squamous, large cell or small cell map to malignant).
  Prints the guard's acceptance per class, the confusion matrix of accepted
  slices, and the malignant-vs-normal AUC of P(malignant);
- **Lung-PET-CT-Dx** (series folders + ``annotations/``): per series the
  guard's verdicts, the case verdict (``lungct.pipeline``), the share of
  tumour-box slices labelled malignant, and the pointing game of the
  model's heatmaps on the boxes (``lungct.lab.pointing``).

Everything runs the product path (decode, guard on, default settings), so
the figures are what a user would see. ``--write-card`` stores them in the
model card under ``external.<dataset>``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from lungct import CLASSES

MALIGNANT_NAMES = re.compile(r"malignan|carcinoma|adeno|squamous|large[ _.-]?cell|"
                             r"small[ _.-]?cell|cancer|tumou?r|nsclc|sclc", re.I)


def folder_class(name: str) -> str | None:
    """The class a folder name stands for, or None."""
    low = name.lower()
    if MALIGNANT_NAMES.search(low):
        return "malignant"
    if "benign" in low or "bengin" in low:
        return "benign"
    if "normal" in low or "healthy" in low:
        return "normal"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score
    return round(float(roc_auc_score(y, score)), 4)


def evaluate_class_folders(root: Path, clf, guard, window: str = "lung") -> dict:
    """Acceptance, confusion and AUC over ``root/<class>/`` folders."""
    from lungct.pipeline import run_case

    out: dict = {"layout": "class folders", "classes": {}}
    y_true, probs = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = folder_class(folder.name)
        if label is None:
            continue
        case = run_case([str(p) for p in _files(folder)], clf, guard=guard, window=window)
        counts = case.counts
        n = sum(counts.values())
        out["classes"][folder.name] = {"label": label, "slices": n, **counts,
                                       "accepted": round(counts.get("classified", 0) / n, 4)
                                       if n else None}
        for r in case.slices:
            if r.status == "classified":
                y_true.append(CLASSES.index(label))
                probs.append([r.prediction.probabilities[c] for c in CLASSES])
    if probs:
        from lungct.training.metrics import confusion
        y, p = np.asarray(y_true), np.asarray(probs)
        out["confusion"] = confusion(y, p.argmax(1)).tolist()
        out["accuracy_accepted"] = round(float((p.argmax(1) == y).mean()), 4)
        keep = y != CLASSES.index("benign")
        out["auc_malignant_vs_normal"] = _auc(y[keep] == CLASSES.index("malignant"),
                                              p[keep, CLASSES.index("malignant")])
        out["auc_malignant_vs_rest"] = _auc(y == CLASSES.index("malignant"),
                                            p[:, CLASSES.index("malignant")])
    return out


def evaluate_lung_pet_ct_dx(root: Path, clf, guard, window: str = "lung",
                            methods: tuple[str, ...] = ("Grad-CAM",)) -> dict:
    """Per series: guard verdicts, case verdict, boxed slices called malignant; pointing game."""
    from lungct.pipeline import run_case
    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.guard.anatomy import hu_shows_lung
    from lungct.lab.pointing import pointing_game

    slices = read_all(root)
    out: dict = {"layout": "Lung-PET-CT-Dx", "series": {}}
    lung_acc, boxed_mal = [], []
    probs: dict[str, list] = {"boxed": [], "other": []}  # classified slices, by tumour box
    other_mal: list[bool] = []
    by_series: dict[str, list] = {}
    for s in slices:
        by_series.setdefault(s.series, []).append(s)
    for series, items in by_series.items():
        case = run_case([s.path for s in items], clf, guard=guard, window=window)
        by_name = {Path(r.name).name: r for r in case.slices if r.name}
        shows = [hu_shows_lung(s.hu) for s in items]
        results = [by_name.get(Path(s.path).name) for s in items]
        accepted = [r is not None and r.status == "classified" for r in results]
        mal = [r is not None and r.status == "classified" and r.prediction.label == "malignant"
               for r in results]
        lung_acc += [a for a, sh in zip(accepted, shows) if sh]
        for r, s in zip(results, items):
            if r is not None and r.status == "classified":
                probs["boxed" if s.boxes else "other"].append(
                    [r.prediction.probabilities[c] for c in clf.classes])
                if not s.boxes:
                    other_mal.append(r.prediction.label == "malignant")
        boxed = [m for m, s in zip(mal, items) if s.boxes]
        boxed_mal += boxed
        verdict = case.verdict or {}
        out["series"][series] = {
            "slices": len(items), **case.counts,
            "lung_slices": int(sum(shows)),
            "lung_slices_accepted": round(float(np.mean([a for a, sh in zip(accepted, shows)
                                                         if sh])), 4) if any(shows) else None,
            "non_lung_slices_classified": int(sum(a for a, sh in zip(accepted, shows) if not sh)),
            "boxed_slices": len(boxed),
            "boxed_called_malignant": int(sum(boxed)),
            "case_verdict": verdict.get("label", "refused")}
    out["lung_slices_accepted"] = round(float(np.mean(lung_acc)), 4) if lung_acc else None
    out["boxed_slices_called_malignant"] = (round(float(np.mean(boxed_mal)), 4)
                                            if boxed_mal else None)
    out["series_called_malignant"] = int(sum(v["case_verdict"] == "malignant"
                                             for v in out["series"].values()))
    # what the model makes of this source: tumour slices against the rest (both patients
    # have cancer, so "the rest" being malignant too says little; equal means says a lot)
    out["mean_probabilities"] = {
        k: {c: round(float(np.mean([p[i] for p in v])), 4) for i, c in enumerate(clf.classes)}
        for k, v in probs.items() if v}
    out["other_slices_called_malignant"] = (round(float(np.mean(other_mal)), 4)
                                            if other_mal else None)
    # does P(malignant) find the tumour within a patient? 0.5: it does not look at it
    mal = clf.classes.index("malignant")
    if probs["boxed"] and probs["other"]:
        score = np.array([p[mal] for p in probs["boxed"] + probs["other"]])
        out["auc_boxed_vs_other"] = _auc(np.r_[np.ones(len(probs["boxed"])),
                                               np.zeros(len(probs["other"]))], score)
    out["pointing"] = {m: pointing_game(clf.torch_model, slices, method=m, window=window)
                       for m in methods}
    return out


def evaluate_external(root: str | Path, clf, guard, window: str = "lung",
                      methods: tuple[str, ...] = ("Grad-CAM",)) -> dict:
    from lungct.data.lung_pet_ct_dx import is_layout

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}")
    if (root / "annotations").is_dir() or (is_layout(root) and not any(
            folder_class(p.name) for p in root.iterdir() if p.is_dir())):
        result = evaluate_lung_pet_ct_dx(root, clf, guard, window, methods)
    else:
        result = evaluate_class_folders(root, clf, guard, window)
        if not result["classes"]:
            raise ValueError(f"{root} has no class folders (normal / benign / malignant or a "
                             "carcinoma type) and is not a Lung-PET-CT-Dx layout")
    result.update(dataset=root.name, model=clf.name, guard="on" if guard else "off",
                  window=window)
    return result


def format_result(r: dict) -> str:
    lines = [f"{r['dataset']} ({r['layout']}), model {r['model']}, guard {r['guard']}"]
    if r["layout"] == "Lung-PET-CT-Dx":
        for name, s in r["series"].items():
            lines.append(f"  {name}: {s['slices']} slices, lung slices accepted "
                         f"{s['lung_slices_accepted']}, boxed called malignant "
                         f"{s['boxed_called_malignant']}/{s['boxed_slices']}, counts "
                         f"{ {k: s[k] for k in ('classified', 'outside_lungs', 'refused', 'error') if k in s} }, "
                         f"case verdict {s['case_verdict']}")
        lines.append(f"  lung slices accepted {r['lung_slices_accepted']}; boxed slices called "
                     f"malignant {r['boxed_slices_called_malignant']}; series called malignant "
                     f"{r['series_called_malignant']}/{len(r['series'])}; other classified "
                     f"slices called malignant {r['other_slices_called_malignant']}")
        if r.get("auc_boxed_vs_other") is not None:
            lines.append(f"  AUC of P(malignant), tumour-box slices against the other classified "
                         f"slices: {r['auc_boxed_vs_other']:.3f} (0.5: the tumour plays no part)")
        for k, p in r["mean_probabilities"].items():
            lines.append(f"  mean probabilities, {k} slices: "
                         + ", ".join(f"{c} {v:.3f}" for c, v in p.items()))
        for m, p in r["pointing"].items():
            if p.get("n"):
                lines.append(f"  pointing game {m}: {p['hits']}/{p['n']} = {p['pointing_game']:.1%}"
                             f" (95% CI {p['pointing_game_ci95'][0]:.0%}-"
                             f"{p['pointing_game_ci95'][1]:.0%}), energy in box "
                             f"{p['energy_in_box']:.1%} (chance {p['chance_energy']:.1%})")
    else:
        for name, c in r["classes"].items():
            lines.append(f"  {name} -> {c['label']}: {c['slices']} slices, accepted "
                         f"{c['accepted']}")
        for key in ("accuracy_accepted", "auc_malignant_vs_normal", "auc_malignant_vs_rest",
                    "confusion"):
            if key in r:
                lines.append(f"  {key}: {r[key]}")
    return "\n".join(lines)


def add_command(sub, common) -> None:
    p = sub.add_parser("external", parents=[common],
                       help="evaluate a model and the guard on another source's chest CT")
    p.add_argument("folder", help="class folders, or a Lung-PET-CT-Dx layout")
    p.add_argument("--model", help="model name (default: app.default_model)")
    p.add_argument("--methods", nargs="+", default=["Grad-CAM"],
                   help="heatmap methods for the pointing game (Lung-PET-CT-Dx layout)")
    p.add_argument("--no-guard", action="store_true", help="classify every slice (diagnostics)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--write-card", action="store_true",
                   help="store the result in the model card under external.<dataset>")
    p.set_defaults(func=cmd_external)


def cmd_external(args) -> int:
    from lungct.config import config_from_args
    from lungct.guard import load_guard
    from lungct.inference import Classifier
    from lungct.models.checkpoint import read_card, write_card

    cfg = config_from_args(args)
    name = args.model or cfg["app"]["default_model"]
    clf = Classifier.from_name(name, cfg=cfg)
    guard = None if args.no_guard else load_guard(cfg=cfg)
    window = cfg.get("preprocess", {}).get("dicom_window", "lung")
    result = evaluate_external(args.folder, clf, guard, window, tuple(args.methods))
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    if args.write_card:
        card = read_card(clf.folder)
        card.setdefault("external", {})[result["dataset"]] = result
        write_card(clf.folder, card)
        print(f"wrote external.{result['dataset']} into {clf.folder / 'card.json'}",
              file=sys.stderr)
    return 0
