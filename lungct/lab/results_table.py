"""The results table of README.md, built from the model cards.

    python -m lungct lab results-table      (or python -m lungct lab results-table)

Every figure comes from a card written by ``python -m lungct lab evaluate`` and
``python -m lungct lab bench --write-cards``; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse

import json
import math

from lungct import CLASSES
from lungct.config import LEAKAGE_REPORT, config_from_args, load_config, models_dir, report_path
from lungct.models import list_shipped
from lungct.models.checkpoint import PREDICTIONS_FILE, read_card

PAIRS = [("student_kd", "teacher_hybrid_vit"), ("student_kd", "student_plain"),
         ("vgg16_kd", "vgg16_scratch"), ("teacher_hybrid_vit_paper", "student_kd_paper")]
"""Model pairs compared on the same test images: teacher vs student, and what KD bought."""

PAPER_ROWS = [("VGG16 (transfer), paper", "97.14%", "0.96"),
              ("ViT teacher, paper", "98.09%", "0.98"),
              ("VGG16 distilled, paper", "98.09%", "0.98")]


def _pct(x, ci=None) -> str:
    if x is None:
        return "n/a"
    s = f"{100 * x:.1f}%"
    if ci and ci[0] is not None:
        s += f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"
    return s


def rows(protocol: str, cfg: dict | None = None) -> list[str]:
    out = []
    for name in list_shipped():
        card = read_card(models_dir(cfg) / name)
        if card.get("protocol") != protocol or card.get("kind") == "ood_guard":
            continue
        m, s = card.get("test_metrics"), card.get("stats", {})
        if not m:
            out.append(f"| {name} | {card.get('arch')} | not evaluated | | | | | | | |")
            continue
        cal = card.get("calibration", {})
        auc = m["roc_auc"].get("malignant")
        out.append(
            f"| {name} | {card.get('arch')} {card.get('input_size')} px | "
            f"{_pct(m['accuracy'], m.get('accuracy_ci95'))} | "
            f"{_pct(m['malignant_recall'], m.get('malignant_recall_ci95'))} | "
            f"{'n/a' if auc is None else f'{auc:.3f}'} | "
            f"{_pct(m['per_class']['benign']['recall'])} | "
            f"{cal.get('ece_before', float('nan')):.3f} / {cal.get('ece_after', float('nan')):.3f} | "
            f"{s.get('params', 0) / 1e6:.1f} M | {(s.get('flops') or 0) / 1e9:.2f} | "
            f"{s.get('cpu_latency_ms', 'n/a')} |")
    return out


def table(cfg: dict | None = None) -> str:
    cfg = load_config() if cfg is None else cfg
    leak = {}
    path = report_path(cfg, LEAKAGE_REPORT)
    if path.exists():
        leak = json.loads(path.read_text())
    head = ("| model | architecture | accuracy (95% CI) | malignant recall (95% CI) | "
            "malignant AUC | benign recall | ECE before / after | params | GFLOPs | "
            "CPU ms/image |\n|---|---|---|---|---|---|---|---|---|---|")
    parts = []
    for protocol, title in (("grouped", "Grouped split (pseudo-patients; the number we trust)"),
                            ("paper", "Paper split (image-level; leaks, for comparison only)")):
        lines = [f"**{title}**", "", head, *rows(protocol, cfg)]
        if protocol in leak:
            lines.append(f"| pixel 1-NN probe (no learning) | raw 64x64 pixels | "
                         f"{_pct(leak[protocol]['pixel_1nn_accuracy'])} | | | | | | | |")
        if protocol == "paper":
            lines += [f"| {n} (published) | | {a} | {r} | | | | | | |" for n, a, r in PAPER_ROWS]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant images."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _correct(name: str, cfg: dict | None = None) -> dict[str, bool] | None:
    path = models_dir(cfg) / name / PREDICTIONS_FILE
    if not path.exists():
        return None
    preds = json.loads(path.read_text())
    return {r["path"]: CLASSES.index(r["label"]) == max(range(len(CLASSES)),
                                                         key=lambda k: r["probs"][k])
            for r in preds["rows"]}


def paired(pairs=PAIRS, cfg: dict | None = None) -> str:
    """Pairs of models on the same test images: who is right where the other is wrong.

    Slices of one patient are not independent, so the p-value is optimistic; it
    says whether a gap is larger than image-level chance, not patient-level.
    """
    lines = ["**Paired comparisons on the same test images** (exact McNemar test on the "
             "images where exactly one model is right; slices of a patient are correlated, "
             "so p is optimistic)", "",
             "| model A | model B | only A right | only B right | p |", "|---|---|---|---|---|"]
    for a, b in pairs:
        ca, cb = _correct(a, cfg), _correct(b, cfg)
        if ca is None or cb is None or set(ca) != set(cb):
            continue
        only_a = sum(ca[p] and not cb[p] for p in ca)
        only_b = sum(cb[p] and not ca[p] for p in ca)
        lines.append(f"| {a} | {b} | {only_a} | {only_b} | {mcnemar_exact(only_a, only_b):.3f} |")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.set_defaults(func=cmd_results_table)


def cmd_results_table(args) -> int:
    cfg = config_from_args(args)
    print(table(cfg))
    print()
    print(paired(cfg=cfg))
    return 0


def add_command(sub, common) -> None:
    """Register ``results-table`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("results-table", parents=[common], help="the README's results tables, from the model cards",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
