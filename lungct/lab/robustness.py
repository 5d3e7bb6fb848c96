"""Does a model's answer survive another hospital's rendering of the same slice?

    python -m lungct lab robustness [--model NAME ...] [--every N] [--write-cards]

Each test slice of the model's own protocol is re-rendered once per kind of
``lungct.lab.phantoms.other_source_variants`` (display curve, contrast, crop,
256 and 768 px, a viewer screenshot, JPEG q40, lung- and mediastinal-window
imitations), and classified as users run it (``Classifier.predict_gray``,
the model's own view). Per kind: accuracy, malignant recall, the share of
normal slices called malignant, and label agreement with the plain slice.
The guard is left out: every variant is a lung CT slice, and the guard's
own pass rate on these same renderings is in the safety report.

Why: the first release's models learned one hospital's narrow-window
export, and an independent check found the default calling 60 of 63
normal slices of another hospital malignant. Other sources cannot ship
with the repository; this rerenders the test slices the way they differ, so
the failure is measured here, per model, and written into its card
(``rendering_robustness``).
"""

from __future__ import annotations

import numpy as np

from lungct.config import resolve

SEED = 0
"""``other_source_variants`` seed: the same renderings for every model."""


def rendering_figures(labels: list[str], plain: list[str], per_kind: dict[str, list[str]]) -> dict:
    """The figures of one model from true labels, plain predictions and predictions per kind."""
    y = np.asarray(labels)

    def summary(pred) -> dict:
        pred = np.asarray(pred)
        normal, malignant = y == "normal", y == "malignant"
        return {"accuracy": round(float((pred == y).mean()), 4),
                "malignant_recall": round(float((pred[malignant] == "malignant").mean()), 4)
                if malignant.any() else None,
                "normal_called_malignant": round(float((pred[normal] == "malignant").mean()), 4)
                if normal.any() else None}

    out = {"n": len(labels), "plain": summary(plain), "kinds": {}}
    for kind, pred in per_kind.items():
        out["kinds"][kind] = {**summary(pred), "same_label_as_plain": round(float(
            (np.asarray(pred) == np.asarray(plain)).mean()), 4)}
    return out


def rendering_robustness(clf, grays: list[np.ndarray], labels: list[str],
                         seed: int = SEED) -> dict:
    """``rendering_figures`` of one classifier on decoded slices and their true labels."""
    from lungct.lab.phantoms import OTHER_SOURCE_KINDS, other_source_variants

    plain = [p.label for p in clf.predict_many(grays)]
    per_kind: dict[str, list[str]] = {k: [] for k in OTHER_SOURCE_KINDS}
    for g in grays:   # one slice's renderings at a time, classified in one batch
        kinds, variants = zip(*other_source_variants(g, seed=seed))
        for kind, p in zip(kinds, clf.predict_many(list(variants))):
            per_kind[kind].append(p.label)
    return rendering_figures(labels, plain, per_kind)


def add_command(sub, common) -> None:
    p = sub.add_parser("robustness", parents=[common],
                       help="each model's answers on its test slices re-rendered as other "
                            "hospitals export them")
    p.add_argument("--model", nargs="+", help="model names (default: every shipped model "
                                                "with weights)")
    p.add_argument("--every", type=int, default=1, help="use every N-th test slice")
    p.add_argument("--write-cards", action="store_true",
                   help="store the figures in each model card under rendering_robustness")
    p.set_defaults(func=cmd_robustness)


def each_model_test_part(args, cfg: dict, label: str | None = None, every: int = 1):
    """For every model of ``args.model`` (default: every shipped model with weights), the
    classifier, its protocol, and the rows and decoded slices of that protocol's test part
    (``label``: that class only; ``every``: every N-th slice), one model at a time: patients
    the model never saw, read as users run it. The commands that probe each model on its own
    test slices (``robustness``, ``lesion-check``) share it."""
    from lungct.data.splits import read_manifest
    from lungct.inference import Classifier
    from lungct.models.checkpoint import list_with_weights
    from lungct.preprocess import load_image

    root = resolve(cfg["data"]["root"])
    manifest = resolve(cfg["data"]["manifest"])
    if not manifest.exists() or not root.is_dir():
        raise ValueError(f"needs the dataset ({root}) and its manifest ({manifest}); set "
                         "LUNGCT_DATA and run `python -m lungct lab split`")
    rows = read_manifest(manifest)
    for name in args.model or list_with_weights():
        clf = Classifier.from_name(name, cfg["app"]["unsure_below"], cfg=cfg)
        protocol = clf.card.get("protocol", "grouped")
        test = [r for r in rows if r[f"{protocol}_split"] == "test"
                and (label is None or r["label"] == label)][::max(1, every)]
        yield clf, protocol, test, [load_image(root / t["path"]) for t in test]


def store_in_card(clf, key: str, value: dict) -> None:
    """``value`` under ``key`` in the card of ``clf``'s model folder."""
    from lungct.models.checkpoint import read_card, write_card

    card = read_card(clf.folder)
    card[key] = value
    write_card(clf.folder, card)


def cmd_robustness(args) -> int:
    from lungct.config import config_from_args

    cfg = config_from_args(args)
    every = max(1, args.every)
    for clf, protocol, test, grays in each_model_test_part(args, cfg, every=every):
        r = rendering_robustness(clf, grays, [t["label"] for t in test])
        r.update(protocol=protocol, data=f"{protocol} test slices"
                 + (f" (every {every})" if every > 1 else ""), seed=SEED)
        print(f"{clf.name} ({protocol} test, {r['n']} slices): plain accuracy "
              f"{r['plain']['accuracy']:.1%}, normal called malignant "
              f"{r['plain']['normal_called_malignant']:.1%}", flush=True)
        for kind, k in r["kinds"].items():
            print(f"  {kind:<30} accuracy {k['accuracy']:6.1%}  malignant recall "
                  f"{k['malignant_recall']:6.1%}  normal called malignant "
                  f"{k['normal_called_malignant']:6.1%}  same label "
                  f"{k['same_label_as_plain']:6.1%}", flush=True)
        if args.write_cards:
            store_in_card(clf, "rendering_robustness", r)
    return 0
