"""Do the heatmaps point at the tumour? The pointing game on boxed tumour slices.

Zhang et al. 2018 ("Top-down neural attention by excitation backprop"): a
heatmap scores a hit when its maximum lies inside the object's box, here with
a tolerance of ``TOLERANCE`` pixels; beside it, the share of the heatmap's
energy inside the boxes, against the share of the image the boxes cover
(chance). Heatmaps are made for the class "malignant" on the slice as users
upload it (DICOM, lung window by default), through ``lungct.explain``.

    python -m lungct lab pointing [--model NAME ...] [--methods Grad-CAM ...] [--write-cards]
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 15
"""Pixels around a box that still count as a hit (Zhang et al. 2018 use 15)."""


def hit(heat: np.ndarray, boxes, tol: int = TOLERANCE) -> bool:
    """Whether the heatmap's maximum lies in any box (x0, y0, x1, y1) grown by ``tol``."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return any(x0 - tol <= x <= x1 + tol and y0 - tol <= y <= y1 + tol
               for x0, y0, x1, y1 in boxes)


def box_mask(shape, boxes) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, y0):max(0, y1 + 1), max(0, x0):max(0, x1 + 1)] = True
    return m


def energy_inside(heat: np.ndarray, boxes) -> float:
    total = float(heat.sum())
    return float(heat[box_mask(heat.shape, boxes)].sum()) / total if total > 0 else 0.0


def pointing_game(model, slices, method: str = "Grad-CAM", target: str = "malignant",
                  window: str = "lung", tol: int = TOLERANCE) -> dict:
    """Pointing game over ``slices`` (``CTSlice`` with ``boxes`` and ``path``) for one model."""
    from lungct.explain import explain
    from lungct.preprocess import load_image

    hits, energies, chance = [], [], []
    by_series: dict[str, list[int]] = {}
    for s in slices:
        if not s.boxes:
            continue
        gray = load_image(s.path, window=window)
        heat = explain(model, gray, method=method, target_class=target).heatmap
        hits.append(hit(heat, s.boxes, tol))
        by_series.setdefault(s.series, [0, 0])[0] += int(hits[-1])
        by_series[s.series][1] += 1
        energies.append(energy_inside(heat, s.boxes))
        chance.append(float(box_mask(heat.shape, s.boxes).mean()))
    n = len(hits)
    if not n:
        return {"n": 0}
    from lungct.training.metrics import wilson
    k = int(sum(hits))
    return {"n": n, "hits": k, "pointing_game": round(k / n, 4),
            "pointing_game_ci95": [round(v, 4) for v in wilson(k, n)],
            "energy_in_box": round(float(np.mean(energies)), 4),
            "chance_energy": round(float(np.mean(chance)), 4),
            "method": method, "target": target, "tolerance_px": tol, "window": window,
            # a map that peaks in one fixed place scores on the patient whose tumour lies
            # there and misses the other: the split tells that from pointing at tumours
            "hits_by_series": {k: f"{h}/{n}" for k, (h, n) in sorted(by_series.items())}}


def add_command(sub, common) -> None:
    from lungct.explain import FAST_METHODS

    p = sub.add_parser("pointing", parents=[common],
                       help="pointing game of heatmaps on the Lung-PET-CT-Dx tumour boxes")
    p.add_argument("--model", nargs="+", help="model names (default: every shipped model "
                                                "with weights)")
    p.add_argument("--methods", nargs="+", default=list(FAST_METHODS),
                   help=f"heatmap methods (default: the fast ones, {', '.join(FAST_METHODS)})")
    p.add_argument("--data", help="Lung-PET-CT-Dx folder (default: params data.external)")
    p.add_argument("--write-cards", action="store_true",
                   help="store the figures in each model card under pointing_game")
    p.set_defaults(func=cmd_pointing)


def cmd_pointing(args) -> int:
    import sys

    from lungct.config import config_from_args
    from lungct.config import resolve
    from lungct.data.lung_pet_ct_dx import read_all
    from lungct.models import load_model
    from lungct.models.checkpoint import list_with_weights, read_card, resolve_model_dir, write_card

    cfg = config_from_args(args)
    root = resolve(args.data or cfg["data"].get("external", "data/raw/lung-pet-ct-dx-sample"))
    slices = [s for s in read_all(root) if s.boxes]
    if not slices:
        print(f"error: no Lung-PET-CT-Dx tumour boxes under {root} (set data.external or "
              "--data)", file=sys.stderr)
        return 2
    window = cfg.get("preprocess", {}).get("dicom_window", "lung")
    names = args.model or list_with_weights()
    print(f"{len(slices)} boxed slices from {root.name}; hit = heatmap maximum within "
          f"{TOLERANCE} px of a box")
    for name in names:
        model = load_model(name)
        results = {m: pointing_game(model, slices, method=m, window=window)
                   for m in args.methods}
        for m, r in results.items():
            print(f"{name:<26} {m:<11} pointing {r['hits']:>2}/{r['n']} = "
                  f"{r['pointing_game']:6.1%} (95% CI {r['pointing_game_ci95'][0]:.0%}-"
                  f"{r['pointing_game_ci95'][1]:.0%})  energy in box {r['energy_in_box']:.1%} "
                  f"(chance {r['chance_energy']:.1%}); by series "
                  + ", ".join(f"{k} {v}" for k, v in r["hits_by_series"].items()), flush=True)
        if args.write_cards:
            card = read_card(resolve_model_dir(name))
            card["pointing_game"] = {"data": f"{root.name} ({len(slices)} boxed slices)",
                                     "view": getattr(model, "view", "full"),
                                     "methods": results}
            write_card(resolve_model_dir(name), card)
    return 0
