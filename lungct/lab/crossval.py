"""Train a shipped recipe k times, once per grouped fold, and report it out of fold.

``python -m lungct lab cv --model student_lungs`` trains the recipe of
``models.student_lungs`` in params.yaml on each fold's train part (early
stopping and model selection on the next fold, ``lungct.lab.cv``), predicts the
fold's test part through the app's preprocessing, and reports all images
out of fold (``lungct.lab.cv.cv_report``): accuracy, malignant and benign recall,
malignant AUC and case accuracy with patient-level intervals, and the
calibration temperature fitted on out-of-fold logits with its ECE.

A recipe with a teacher trains that teacher on the same fold first (a
teacher that saw the test fold would leak it through its soft labels);
``--no-teacher`` trains the student recipe without distillation, half the
CPU time. Each fold's logits are saved as it finishes
(``data/cache/cv/NAME/foldF.npz``), so an interrupted run resumes where it
stopped; the fold models stay under ``data/cache`` (never shipped). The
report goes to ``reports/cv/NAME.json``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from lungct import CLASSES
from lungct.config import model_config, report_path, resolve
from lungct.lab.cv import assign_folds, cv_report, fold_manifest, fold_part, format_cv
from lungct.data.splits import read_manifest


def _fold_cfg(cfg: dict, name: str, manifest: Path, work: Path, epochs: int | None) -> dict:
    out, _, _ = model_config(cfg, name)
    out = copy.deepcopy(out)
    out["data"]["manifest"] = str(manifest)
    out["train"]["protocol"] = "grouped"
    out.setdefault("reports", {})["dir"] = str(work / "reports")   # histories stay out of git
    if epochs:
        out["train"]["epochs"] = int(epochs)
    return out


def run_cv(cfg: dict, name: str, k: int = 5, use_teacher: bool = True,
           epochs: int | None = None, only: list[int] | None = None,
           cache: str | Path = "data/cache/cv") -> dict | None:
    """Train and predict every fold (or ``only`` these); the report once all folds exist."""
    from lungct.training.evaluate import collect_logits
    from lungct.models import load_model
    from lungct.training.run import train_from_config

    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    root = resolve(cfg["data"]["root"])
    folds = assign_folds(rows, k, int(cfg["data"]["seed"]))
    _, recipe_teacher, _ = model_config(cfg, name)
    teacher_name = recipe_teacher if use_teacher else None
    tag = name if use_teacher or not recipe_teacher else f"{name}_no_teacher"
    work = resolve(cache) / tag
    minutes = {}
    for f in range(k):
        done = work / f"fold{f}.npz"
        if done.exists() or (only is not None and f not in only):
            continue
        start = time.time()
        manifest = fold_manifest(rows, folds, f, k, work / f"fold{f}.csv")
        teacher = None
        if teacher_name:
            tcfg = _fold_cfg(cfg, teacher_name, manifest, work, epochs)
            teacher = train_from_config(tcfg, f"{teacher_name}_cv{f}",
                                        work / f"fold{f}" / "teacher", track=False)
        scfg = _fold_cfg(cfg, name, manifest, work, epochs)
        folder = train_from_config(scfg, f"{name}_cv{f}", work / f"fold{f}" / "model",
                                   teacher=teacher, track=False)
        test = [r for r in rows if fold_part(folds[r["group"]], f, k) == "test"]
        logits, y = collect_logits(load_model(folder), root, test)
        np.savez(done, logits=logits.numpy(), y=y.numpy(),
                 paths=np.array([r["path"] for r in test]))
        minutes[f] = round((time.time() - start) / 60, 1)
        print(f"fold {f}: {len(test)} test images, {minutes[f]} min", flush=True)
    if not all((work / f"fold{f}.npz").exists() for f in range(k)):
        return None
    by_path = {r["path"]: r for r in rows}
    ys, logits, groups, fold_ids = [], [], [], []
    for f in range(k):
        d = np.load(work / f"fold{f}.npz")
        for p, lg, yy in zip(d["paths"], d["logits"], d["y"]):
            ys.append(int(yy))
            logits.append(lg)
            groups.append(by_path[str(p)]["group"])
            fold_ids.append(f)
    report = cv_report(ys, np.array(logits), groups, fold_ids)
    report.update(recipe=name, teacher_per_fold=teacher_name,
                  epochs=epochs or model_config(cfg, name)[0]["train"]["epochs"],
                  classes=list(CLASSES))
    out = report_path(cfg, f"cv/{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(format_cv(report, f"{tag}: recipe of models.{name}"
                    + (f", teacher {teacher_name} per fold" if teacher_name else
                       ", without distillation" if recipe_teacher else "")))
    print(f"wrote {out}")
    return report


def load_oof(tag: str, k: int = 5, cache: str | Path = "data/cache/cv"):
    """(paths, labels, logits) of a finished run, in fold order."""
    work = resolve(cache) / tag
    parts = [np.load(work / f"fold{f}.npz") for f in range(k)]
    return (np.concatenate([d["paths"] for d in parts]),
            np.concatenate([d["y"] for d in parts]),
            np.concatenate([d["logits"] for d in parts]))


def compare_runs(cfg: dict, tag_a: str, tag_b: str, k: int = 5,
                 cache: str | Path = "data/cache/cv") -> dict:
    """Paired out-of-fold comparison of two finished runs (same folds, same images)."""
    from lungct.lab.cv import paired_difference

    groups = {r["path"]: r["group"] for r in read_manifest(resolve(cfg["data"]["manifest"]))}
    paths_a, y, logits_a = load_oof(tag_a, k, cache)
    paths_b, _, logits_b = load_oof(tag_b, k, cache)
    order = {p: i for i, p in enumerate(paths_b)}
    if set(order) != set(paths_a.tolist()):
        raise ValueError(f"{tag_a} and {tag_b} did not predict the same images")
    logits_b = logits_b[[order[p] for p in paths_a]]
    out = paired_difference(y, logits_a.argmax(1), logits_b.argmax(1),
                            [groups[str(p)] for p in paths_a])
    print(f"{tag_a} - {tag_b}: accuracy {out['accuracy_a']:.1%} - {out['accuracy_b']:.1%} = "
          f"{out['difference']:+.1%} (95% CI {out['difference_ci95'][0]:+.1%} to "
          f"{out['difference_ci95'][1]:+.1%}, patient bootstrap); only A right "
          f"{out['only_a_right']}, only B right {out['only_b_right']}")
    return out


def add_command(sub, common) -> None:
    p = sub.add_parser("cv", parents=[common],
                       help="k-fold grouped cross-validation of a shipped recipe")
    p.add_argument("--model", required=True, help="a models.NAME entry of params.yaml")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--no-teacher", action="store_true",
                   help="train the student recipe without distillation (half the time)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (say so in reports)")
    p.add_argument("--only", type=int, nargs="+", help="run only these folds (resume later)")
    p.add_argument("--compare", metavar="RUN",
                   help="instead: compare the finished run of --model with RUN (a folder name "
                        "under data/cache/cv, e.g. student_lungs_no_teacher), image by image")
    p.set_defaults(func=cmd_cv)


def cmd_cv(args) -> int:
    from lungct.config import config_from_args
    cfg = config_from_args(args)
    if args.compare:
        compare_runs(cfg, args.model, args.compare, args.folds)
        return 0
    report = run_cv(cfg, args.model, args.folds, not args.no_teacher, args.epochs, args.only)
    return 0 if report is not None or args.only else 1
