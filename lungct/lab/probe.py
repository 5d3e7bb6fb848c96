"""Which frozen backbone knows lung CT? A linear probe under grouped cross-validation.

Why: the issue asks whether a CT-pretrained backbone (``lungct.models.ct_resnet``,
the Astra/Merlin chest-CT ResNet-152 collapsed to 2D) would serve better than
the ImageNet EfficientNet-Lite0 every shipped model starts from. Fine-tuning
a ResNet-152 on this CPU is out of reach, so both backbones are compared the
cheap, fair way: frozen features of the lung view (``lungct.lungs``), a
logistic regression on top, 5-fold cross-validation grouped by pseudo-patient
(``lungct.lab.cv``); then a probe fitted on all of IQ-OTH/NCCD is asked about
the Lung-PET-CT-Dx slices the guard accepts (do tumour-box slices score
higher than the same patients' other lung slices?).

``python -m lungct lab probe --backbone imagenet astra`` prints both and writes
``reports/backbone_probe.json``. Features are cached under ``data/cache/probe``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lungct import CLASSES
from lungct.lab.cv import assign_folds, cv_report, format_cv, fold_part

BACKBONES = ("imagenet", "astra")
SIZE = 224
C_GRID = (0.01, 0.1, 1.0)
REPORT = "backbone_probe.json"


# --------------------------------------------------------------- features

def _extractor(backbone: str):
    """A function: list of lung views -> (N, D) float32 features."""
    import torch

    if backbone == "imagenet":
        from lungct.guard.features import FeatureExtractor
        ex = FeatureExtractor(("blocks.5", "head"), SIZE)
        return lambda views: np.concatenate([v for v in ex(views).values()], axis=1)
    if backbone == "astra":
        from lungct.models.ct_resnet import load_astra_resnet152
        net = load_astra_resnet152()

        def run(views):
            # the 3D network read volumes in RAS order: rows = patient right -> left...
            # our slices are displayed radiologically, so flip both axes and transpose
            x = torch.from_numpy(np.stack([v[::-1, ::-1].T.copy() for v in views]))
            x = x[:, None].expand(-1, 3, -1, -1).contiguous()
            with torch.inference_mode():
                return net.features(x).numpy()
        return run
    raise ValueError(f"unknown backbone {backbone!r}: use one of {BACKBONES}")


def inputs_digest(grays: list[np.ndarray]) -> str:
    """A short hash of the slices themselves: a feature cache is valid for these inputs only
    (another guard or segmentation accepts other slices)."""
    import hashlib

    h = hashlib.sha256()
    for g in grays:
        h.update(np.ascontiguousarray(g, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def features(backbone: str, grays: list[np.ndarray], cache: Path | None = None,
             batch_size: int = 16) -> np.ndarray:
    """Frozen features of the lung views of ``grays`` (cached in folder ``cache``, under
    the backbone's name and a digest of the inputs)."""
    if cache is not None:
        cache = cache / f"{backbone}_{len(grays)}_{inputs_digest(grays)}.npz"
        if cache.exists():
            return np.load(cache)["x"]
    from lungct.lungs import lung_view

    run = _extractor(backbone)
    parts = []
    for i in range(0, len(grays), batch_size):
        parts.append(run([lung_view(g, SIZE) for g in grays[i:i + batch_size]]))
        print(f"  {backbone}: {min(i + batch_size, len(grays))}/{len(grays)}", end="\r",
              flush=True)
    x = np.concatenate(parts).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x)
    return x


# ------------------------------------------------------------------ probe

def _fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x, y)


def _pick_c(x_tr, y_tr, x_val, y_val) -> float:
    from sklearn.metrics import log_loss

    losses = [log_loss(y_val, _fit(x_tr, y_tr, c).predict_proba(x_val), labels=[0, 1, 2])
              for c in C_GRID]
    return C_GRID[int(np.argmin(losses))]


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: dict[str, int],
                   k: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Out-of-fold logits, fold ids, and the C chosen per fold (on that run's val fold)."""
    fold_ids = np.array([folds[g] for g in groups])
    logits = np.zeros((len(y), len(CLASSES)))
    chosen = []
    for f in range(k):
        part = np.array([fold_part(fi, f, k) for fi in fold_ids])
        tr, va, te = part == "train", part == "val", part == "test"
        c = _pick_c(x[tr], y[tr], x[va], y[va])
        chosen.append(c)
        logits[te] = _fit(x[tr], y[tr], c).decision_function(x[te])
    return logits, fold_ids, chosen


def _auc(pos: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(pos, score)) if 0 < pos.sum() < len(pos) else None


def external_check(model, x_ext: np.ndarray, boxed: np.ndarray) -> dict:
    """The probe fitted on all IQ-OTH/NCCD, on guard-accepted Lung-PET-CT-Dx slices."""
    p = model.predict_proba(x_ext)
    mal = p[:, CLASSES.index("malignant")]
    called = p.argmax(1) == CLASSES.index("malignant")
    return {"accepted_slices": int(len(mal)), "boxed_slices": int(boxed.sum()),
            "boxed_called_malignant": int(called[boxed].sum()),
            "other_called_malignant": int(called[~boxed].sum()),
            "auc_boxed_vs_other_slices": _auc(boxed, mal),
            "mean_p_malignant_boxed": float(mal[boxed].mean()) if boxed.any() else None,
            "mean_p_malignant_other": float(mal[~boxed].mean()) if (~boxed).any() else None}


def run_probe(cfg: dict, backbones=BACKBONES, k: int = 5, external: str | None = None) -> dict:
    from lungct.config import report_path, resolve
    from lungct.data.splits import read_manifest
    from lungct.preprocess import decode_image, load_image

    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    folds = assign_folds(rows, k, int(cfg["data"]["seed"]))
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    grays = [load_image(root / r["path"]) for r in rows]
    ext_grays, boxed = [], []
    ext_root = external or (cfg["data"].get("external") or None)
    if ext_root and Path(resolve(ext_root)).is_dir():
        from lungct.data.lung_pet_ct_dx import read_all
        from lungct.guard import load_guard
        guard = load_guard(cfg=cfg)
        for s in read_all(resolve(ext_root)):
            g = decode_image(Path(s.path).read_bytes(), window="lung")
            if guard.check(g).accepted:
                ext_grays.append(g)
                boxed.append(bool(s.boxes))
    boxed = np.array(boxed, dtype=bool)
    cache = resolve("data/cache/probe")
    out = {"k": k, "seed": int(cfg["data"]["seed"]), "size": SIZE, "view": "lungs",
           "head": f"standardised logistic regression, C from {list(C_GRID)} on each run's "
                   "val fold", "backbones": {}}
    for name in backbones:
        x = features(name, grays, cache)
        logits, fold_ids, chosen = cross_validate(x, y, groups, folds, k)
        entry = {"features": int(x.shape[1]), "c_per_fold": chosen,
                 "cv": cv_report(y, logits, groups, fold_ids)}
        print(format_cv(entry["cv"], f"{name} backbone, frozen, linear probe"))
        if len(ext_grays):
            x_ext = features(name, ext_grays, cache)
            model = _fit(x, y, float(np.median(chosen)))
            entry["external"] = external_check(model, x_ext, boxed)
            print(f"  Lung-PET-CT-Dx (probe on all IQ-OTH/NCCD): {entry['external']}")
        out["backbones"][name] = entry
    path = report_path(cfg, REPORT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return out


def add_command(sub, common) -> None:
    p = sub.add_parser("probe", parents=[common],
                       help="frozen backbones (ImageNet, CT-pretrained) under grouped CV")
    p.add_argument("--backbone", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--external", help="Lung-PET-CT-Dx folder (default: data.external)")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from lungct.config import config_from_args
    run_probe(config_from_args(args), args.backbone, args.folds, args.external)
    return 0
