"""Does a model notice a mass? Normal test slices, plain and with a mass painted into a lung.

A model that reads the lesion gives a slice with a solid mass of several
centimetres in a lung field a higher P(malignant) than the same slice without
it. One that reads the export, the framing or the patient's build does not
care. This check asks every model that question on the normal slices of its
own test part (patients it never saw): each slice is classified as users run
it (``Classifier.predict_gray``, guard off), once plain and once with one mass
painted into its lung fields by ``lungct.training.lesions.paint_mass`` (the
slice's own soft-tissue grey and texture, round to spiculated, up to 3-7 cm on a
512-px chest slice, within the lung field), seeded so every model meets the same masses.
Reported:
the AUC of P(malignant) painted against plain (0.5: the mass plays no part,
1.0: every painted slice scores above every plain one), mean P(malignant) and
the share of slices called malignant, both ways.

    python -m lungct lab lesion-check [--model NAME ...] [--write-cards]
"""

from __future__ import annotations

import numpy as np

SEED = 0
DIAMETER = (0.08, 0.2)
"""Mass diameter as a share of the image side (IQ-OTH/NCCD: about 3-7 cm)."""
DEPTH = 0.9
"""The mass's centre lies this many radii inside a lung field: it sits in the lung, where a
reader sees it at once, not merged into the mediastinum (smaller where a field is narrow)."""


def paint_slices(grays: list[np.ndarray], seed: int = SEED) -> list[tuple[int, np.ndarray]]:
    """(index, painted copy) for every slice whose lung fields are found, in [0, 1] floats."""
    from lungct.lungs import segment
    from lungct.training.lesions import paint_mass

    rng = np.random.default_rng(seed)
    out = []
    for i, g in enumerate(grays):
        u8 = np.clip(np.round(np.asarray(g, np.float32) * 255), 0, 255).astype(np.uint8)
        seg = segment(g)
        painted = paint_mass(u8, seg.mask("lungs"), rng, DIAMETER, spicule_p=0.5,
                             depth=DEPTH, body=seg.mask("body"))
        if painted is not None:
            out.append((i, painted.astype(np.float32) / 255))
    return out


def lesion_sensitivity(clf, grays: list[np.ndarray], seed: int = SEED) -> dict:
    """The figures for one classifier on ``grays`` (slices without a lesion)."""
    from sklearn.metrics import roc_auc_score

    pairs = paint_slices(grays, seed)
    if not pairs:
        return {"n": 0}
    plain = clf.predict_many([grays[i] for i, _ in pairs])
    painted = clf.predict_many([p for _, p in pairs])
    p0 = np.array([p.probabilities["malignant"] for p in plain])
    p1 = np.array([p.probabilities["malignant"] for p in painted])
    return {"n": len(pairs), "seed": seed, "diameter_share_of_side": list(DIAMETER),
            "depth_in_radii": DEPTH,
            "auc_painted_vs_plain": round(float(roc_auc_score(
                np.r_[np.zeros(len(p0)), np.ones(len(p1))], np.r_[p0, p1])), 4),
            "mean_p_malignant": {"plain": round(float(p0.mean()), 4),
                                 "painted": round(float(p1.mean()), 4)},
            "called_malignant": {
                "plain": round(float(np.mean([p.label == "malignant" for p in plain])), 4),
                "painted": round(float(np.mean([p.label == "malignant" for p in painted])), 4)}}


def add_command(sub, common) -> None:
    p = sub.add_parser("lesion-check", parents=[common],
                       help="does each model notice a mass painted into its normal test slices?")
    p.add_argument("--model", nargs="+", help="model names or folders (default: every "
                                                "shipped model with weights)")
    p.add_argument("--write-cards", action="store_true",
                   help="store the figures in each model card under lesion_sensitivity")
    p.set_defaults(func=cmd_lesion_check)


def cmd_lesion_check(args) -> int:
    from lungct.config import config_from_args
    from lungct.lab.robustness import each_model_test_part, store_in_card

    cfg = config_from_args(args)
    for clf, protocol, _, grays in each_model_test_part(args, cfg, label="normal"):
        r = lesion_sensitivity(clf, grays)
        if not r["n"]:
            print(f"{clf.name}: no normal test slice with lung fields found", flush=True)
            continue
        r.update(data=f"normal slices of the {protocol} test part")
        print(f"{clf.name} ({protocol} test, {r['n']} normal slices): AUC painted vs plain "
              f"{r['auc_painted_vs_plain']:.3f}; mean P(malignant) "
              f"{r['mean_p_malignant']['plain']:.3f} -> {r['mean_p_malignant']['painted']:.3f}; "
              f"called malignant {r['called_malignant']['plain']:.1%} -> "
              f"{r['called_malignant']['painted']:.1%}", flush=True)
        if args.write_cards:
            store_in_card(clf, "lesion_sensitivity", r)
    return 0
