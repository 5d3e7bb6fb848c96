"""How much does a split leak? Measured without any learning.

For each protocol's test part: the correlation of every test thumbnail with
its nearest training thumbnail, the share of test images that have a training
near-twin (correlation above ``twin_corr``), and the accuracy of a
1-nearest-neighbour classifier on raw 64x64 pixels. If that pixel 1-NN scores
as high as a trained network, the split measures memory, not diagnosis.
A random 80/20 image-level split is reported beside them for scale.

The **rendering shortcut probe** asks another question: can a classifier
that sees only the grey-level histogram (32 bins, no spatial information at
all) of what a model is fed tell the classes apart? On IQ-OTH/NCCD's raw
export it can (malignant slices are exported darker): a model may learn the
export instead of the lesion. It is run on the raw slice ("full" view) and on
the lung view (``lungct.lungs``) that the models see, with a random forest
and a logistic regression fitted on train and scored on test.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from lungct import CLASSES
from lungct.data.grouping import cross_class_twins
from lungct.data.similarity import correlation_matrix, thumbnail
from lungct.preprocess import load_image, model_view

HIST_BINS = 32


def raw_pixels(gray: np.ndarray, size: int = 64) -> np.ndarray:
    """Raw grey pixels at ``size``x``size``, flattened: the 1-NN probe's features."""
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32).ravel()


def load_features(root: str | Path, paths: list[str], thumb_size: int = 32,
                  raw_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm thumbnails and raw pixel vectors for every path."""
    thumbs, raws = [], []
    for rel in paths:
        gray = load_image(Path(root) / rel)
        thumbs.append(thumbnail(gray, thumb_size))
        raws.append(raw_pixels(gray, raw_size))
    return np.stack(thumbs), np.stack(raws)


def pixel_1nn_accuracy(train_x: np.ndarray, train_y: np.ndarray,
                       test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy of 1-NN (Euclidean distance on raw pixels) from train to test."""
    d2 = ((test_x ** 2).sum(1)[:, None] - 2 * test_x @ train_x.T
          + (train_x ** 2).sum(1)[None, :])
    pred = train_y[np.argmin(d2, axis=1)]
    return float((pred == test_y).mean())


def split_leakage(thumbs: np.ndarray, raws: np.ndarray, y: np.ndarray,
                  train_mask: np.ndarray, test_mask: np.ndarray,
                  twin_corr: float = 0.95) -> dict:
    """Leakage figures of one train/test partition."""
    nearest = correlation_matrix(thumbs[test_mask], thumbs[train_mask]).max(axis=1)
    return {
        "n_train": int(train_mask.sum()),
        "n_test": int(test_mask.sum()),
        "nearest_train_corr_median": float(np.median(nearest)),
        "nearest_train_corr_p90": float(np.percentile(nearest, 90)),
        "share_test_with_twin": float((nearest >= twin_corr).mean()),
        "pixel_1nn_accuracy": pixel_1nn_accuracy(raws[train_mask], y[train_mask],
                                                 raws[test_mask], y[test_mask]),
    }


def grey_histogram(gray: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Share of pixels in each of ``bins`` equal grey-level bins of [0, 1]."""
    h = np.histogram(np.clip(gray, 0, 1), bins=bins, range=(0.0, 1.0))[0]
    return (h / max(1, h.sum())).astype(np.float32)


def histogram_probe(hist: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                    seed: int = 0) -> dict:
    """Accuracy and malignant AUC of histogram-only classifiers (train -> test)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    out = {"majority_rate": round(float(np.bincount(y[test]).max() / test.sum()), 4)}
    mal = CLASSES.index("malignant")
    for name, clf in (("random_forest", RandomForestClassifier(300, random_state=seed,
                                                               n_jobs=1)),
                      ("logistic", LogisticRegression(max_iter=2000))):
        clf.fit(hist[train], y[train])
        p = clf.predict_proba(hist[test])
        col = list(clf.classes_).index(mal)
        out[name] = {"accuracy": round(float((clf.classes_[p.argmax(1)] == y[test]).mean()), 4),
                     "malignant_auc": round(float(roc_auc_score(y[test] == mal, p[:, col])), 4)}
    return out


def shortcut_probe(root: str | Path, rows: list[dict], size: int = 224,
                   views=("full", "lungs"), protocol: str = "grouped") -> dict:
    """The rendering shortcut probe on each view of the slices, on ``protocol``'s split."""
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    parts = np.array([r[f"{protocol}_split"] for r in rows])
    grays = [load_image(Path(root) / r["path"]) for r in rows]
    out = {"protocol": protocol, "bins": HIST_BINS, "size": size}
    for view in views:
        hist = np.stack([grey_histogram(model_view(g, size, view)) for g in grays])
        out[view] = histogram_probe(hist, y, parts == "train", parts == "test")
    return out


def leakage_report(root: str | Path, rows: list[dict], twin_corr: float = 0.95,
                   seed: int = 42, shortcut: bool = True) -> dict:
    """Leakage of the paper split, the grouped split and a random 80/20 reference."""
    paths = [r["path"] for r in rows]
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    thumbs, raws = load_features(root, paths)
    report = {}
    for protocol in ("paper", "grouped"):
        parts = np.array([r[f"{protocol}_split"] for r in rows])
        report[protocol] = split_leakage(thumbs, raws, y, parts == "train",
                                         parts == "test", twin_corr)
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    test = np.zeros(len(rows), bool)
    test[order[: len(rows) // 5]] = True
    report["random_80_20"] = split_leakage(thumbs, raws, y, ~test, test, twin_corr)

    labels = [r["label"] for r in rows]
    report["cross_class_twins"] = [
        {"a": paths[i], "b": paths[j], "corr": round(c, 4),
         "same_grouped_part": rows[i]["grouped_split"] == rows[j]["grouped_split"],
         "same_group": rows[i]["group"] == rows[j]["group"]}
        for i, j, c in cross_class_twins(labels, thumbs, twin_corr)]
    if shortcut:
        report["shortcut_probe"] = shortcut_probe(root, rows)
    return report


def format_leakage(report: dict) -> str:
    """A short table for the terminal."""
    lines = [f"{'split':<14}{'n_test':>7}{'median nn corr':>16}{'twin share':>12}"
             f"{'pixel 1-NN acc':>16}"]
    for name in ("random_80_20", "paper", "grouped"):
        r = report[name]
        lines.append(f"{name:<14}{r['n_test']:>7}{r['nearest_train_corr_median']:>16.3f}"
                     f"{r['share_test_with_twin']:>12.3f}{r['pixel_1nn_accuracy']:>16.3f}")
    probe = report.get("shortcut_probe")
    if probe:
        lines.append(f"rendering shortcut probe ({probe['bins']}-bin grey histogram only, "
                     f"{probe['protocol']} split; majority rate "
                     f"{probe[next(v for v in ('full', 'lungs') if v in probe)]['majority_rate']:.3f}):")
        for view in ("full", "lungs"):
            if view in probe:
                rf, lr = probe[view]["random_forest"], probe[view]["logistic"]
                lines.append(f"  {view:<6} view: random forest acc {rf['accuracy']:.3f} "
                             f"AUC {rf['malignant_auc']:.3f}; logistic acc {lr['accuracy']:.3f} "
                             f"AUC {lr['malignant_auc']:.3f}")
    twins = report["cross_class_twins"]
    lines.append(f"cross-class near-twins: {len(twins)}")
    for t in twins:
        lines.append(f"  {t['a']} ~ {t['b']} corr={t['corr']:.3f} "
                     f"same group={t['same_group']} same grouped part={t['same_grouped_part']}")
    return "\n".join(lines)
