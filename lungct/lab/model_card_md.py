"""Render a model card (card.json) as the short README.md that sits beside it."""

from __future__ import annotations

import json
from pathlib import Path

from lungct import CLASSES


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" (95% CI {_pct(ci[0])}-{_pct(ci[1])})"


def _selection_lines(sel, indent: str = "", title: str = "Selection") -> list[str]:
    """How the model was chosen on validation (card ``training.selection``), as bullets."""
    if not sel:
        return []
    if not isinstance(sel, dict):
        return [f"{indent}- {title}: {sel}"]
    lines = [f"{indent}- {title}: {sel.get('rule', '')}".rstrip()]
    for key, value in sel.items():
        if key == "rule":
            continue
        if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            lines.append(f"{indent}  - {key}: " + "; ".join(f"{k} {v}" for k, v in value.items()))
        elif isinstance(value, dict):
            lines += _selection_lines(value, indent + "  ", key.replace("_", " "))
        else:
            lines.append(f"{indent}  - {key}: {value}")
    return lines


def render(card: dict) -> str:
    lines = [f"# {card.get('name', 'model')}", "", card.get("description", ""), "",
             f"- Architecture: `{card.get('arch')}` ({card.get('input_size')} px input, "
             f"mean {card.get('mean')}, std {card.get('std')}), classes {card.get('classes')}",
             f"- Protocol: **{card.get('protocol')}** (trained, selected and tested on the "
             f"{card.get('protocol')} split of data/splits.csv)",
             f"- Initialisation: {card.get('pretrained')}"]
    if card.get("teacher"):
        t = card["teacher"]
        tc = card.get("training", {}).get("config", {})
        lines.append(f"- Distilled from `{t.get('name')}` ({t.get('arch')}, protocol "
                     f"{t.get('protocol')}); alpha {tc.get('alpha')}, T {tc.get('temperature')}")
    tr = card.get("training", {})
    if tr:
        hist = tr.get("history", [])
        best = next((h.get("best_epoch") for h in reversed(hist) if "best_epoch" in h), None)
        lines.append(f"- Training: {len(hist)} epochs run (best by "
                     f"{tr.get('config', {}).get('monitor')} at epoch {best}) on "
                     f"{tr.get('device')} in {tr.get('minutes')} min; "
                     f"{tr.get('data', {}).get('n_train')} train / "
                     f"{tr.get('data', {}).get('n_val')} val images")
        tc = tr.get("config", {})
        recipe = [f"lr {tc.get('lr')}", f"batch {tc.get('batch_size')}"]
        if tc.get("freeze_bn"):
            recipe.append("frozen BatchNorm statistics")
        if tc.get("ema_decay"):
            recipe.append(f"weight EMA {tc.get('ema_decay')}")
        aug = tc.get("augment", {})
        if aug.get("jpeg_quality") and aug.get("jpeg_p"):
            recipe.append(f"JPEG re-compression q{aug['jpeg_quality']} p{aug['jpeg_p']}")
        lines.append("- Recipe: " + ", ".join(recipe))
        lines += _selection_lines(tr.get("selection"))
    m = card.get("test_metrics")
    if m:
        ev = card.get("evaluated_on", {})
        lines += ["", f"## Test metrics ({ev.get('protocol')} test split, n={m['n']})", "",
                  f"- Accuracy {_pct(m['accuracy'])}{_ci(m.get('accuracy_ci95'))}",
                  f"- Malignant recall {_pct(m['malignant_recall'])}"
                  f"{_ci(m.get('malignant_recall_ci95'))}; malignant false negatives "
                  f"{m.get('malignant_false_negatives')}",
                  "- ROC AUC (one vs rest): " + ", ".join(
                      f"{c} {m['roc_auc'].get(c):.3f}" if m['roc_auc'].get(c) is not None
                      else f"{c} n/a" for c in CLASSES),
                  "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for c in CLASSES:
            p = m["per_class"][c]
            lines.append(f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | "
                         f"{p['f1']:.3f} | {p['support']} |")
        lines += ["", "Confusion matrix (rows true, columns predicted: "
                  + ", ".join(CLASSES) + "):", "", "```"]
        lines += [" ".join(f"{v:>4}" for v in row) for row in m["confusion_matrix"]]
        lines += ["```"]
        cal = card.get("calibration", {})
        if cal:
            lines.append(f"- Calibration: temperature {cal.get('temperature')} (fitted on val); "
                         f"ECE {cal.get('ece_before'):.3f} before, {cal.get('ece_after'):.3f} after")
        op = card.get("operating_point")
        if op:
            t = op["test"]
            lines.append(f"- Screening flag: P({op['class']}) >= {op['threshold']:.4f}, chosen for "
                         f"{op['target_val_recall']:.0%} {op['class']} recall on val; on test "
                         f"it catches {_pct(t['recall'])}{_ci(t.get('recall_ci95'))} "
                         f"({t['missed']} missed) and flags {t['flagged_negatives']} other "
                         f"slices")
        probe = card.get("leakage_probe")
        if probe:
            lines.append(f"- For scale, a pixel 1-NN with no learning scores "
                         f"{_pct(probe['pixel_1nn_accuracy'])} on the same split")
    else:
        lines += ["", "Not evaluated on a test split yet (`python -m lungct lab evaluate`)."]
    s = card.get("stats", {})
    if s:
        lines += ["", "## Size and speed", "",
                  f"- Parameters {s.get('params', 0) / 1e6:.2f} M; "
                  f"{(s.get('flops') or 0) / 1e9:.2f} GFLOPs per image; weights "
                  f"{s.get('weights_mb')} MB",
                  f"- CPU latency {s.get('cpu_latency_ms')} ms per image end to end on "
                  f"{s.get('cpu_backend', 'torch')} ({s.get('threads')} threads; "
                  "`python -m lungct lab bench --write-cards`)"]
        if s.get("cli_folder_marginal_ips") is not None:
            lines.append(f"- `python -m lungct predict` on a folder, guard on: "
                         f"{s['cli_folder_marginal_ips']} images/s marginal "
                         f"({s.get('cli_folder_ips')} over the whole run); guard off: "
                         f"{s.get('cli_folder_marginal_ips_no_guard')} "
                         f"({s.get('cli_folder_ips_no_guard')})")
    st = card.get("storage")
    if st:
        c = st.get("check", {})
        lines.append(f"- Stored in {st.get('dtype')} (`python -m lungct lab half`): on "
                     f"{c.get('images')} {c.get('split')} images, {c.get('label_changes')} "
                     f"label changes, largest probability change {c.get('max_prob_diff')}; "
                     "computes in float32")
    q = card.get("int8")
    if q:
        parts = []
        for part, label in (("test", "test"), ("val_other_renderings",
                                                "validation slices in other renderings")):
            c = q.get(part) or {}
            if c:
                parts.append(f"{label} {c['labels_changed']} of {c['n']} labels changed, "
                             f"accuracy {_pct(c['float32']['accuracy'])} -> "
                             f"{_pct(c['int8']['accuracy'])}")
        lines.append(f"- ONNX Runtime runs it in int8 by default (`python -m lungct lab quantize`, "
                     f"`runtime.precision`; {q.get('format')}): against float32, "
                     + "; ".join(parts))
    lines += _other_sources(card)
    lines += ["", "## Intended use", "",
              "Research decision support for lung CT slices; not a medical device. Every "
              "output needs a radiologist's review.", "", f"Data: {card.get('dataset')}", ""]
    return "\n".join(lines)


def _other_sources(card: dict) -> list[str]:
    """Another source's DICOM (``external``), where the heatmaps point (``pointing_game``)
    and other renderings of the test slices (``rendering_robustness``)."""
    lines: list[str] = []
    for name, ext in (card.get("external") or {}).items():
        if not isinstance(ext, dict) or ext.get("layout") != "Lung-PET-CT-Dx":
            continue
        n = len(ext.get("series") or {})
        lines.append(f"- {name} (`python -m lungct lab external`, guard on): lung slices accepted "
                     f"{_pct(ext.get('lung_slices_accepted'))}; tumour-box slices called "
                     f"malignant {_pct(ext.get('boxed_slices_called_malignant'))}; other lung "
                     f"slices called malignant {_pct(ext.get('other_slices_called_malignant'))}; "
                     f"series with a malignant verdict {ext.get('series_called_malignant')}/{n}"
                     + (f"; AUC of P(malignant), tumour-box slices against the others "
                        f"{ext['auc_boxed_vs_other']:.3f}" if ext.get("auc_boxed_vs_other")
                        is not None else ""))
    methods = (card.get("pointing_game") or {}).get("methods") or {}
    if methods:
        lines.append("- Pointing game on the tumour boxes (`python -m lungct lab pointing`; heatmap "
                     "maximum within 15 px / energy inside the boxes; hits per series): "
                     + "; ".join(
                         f"{m} {_pct(r.get('pointing_game'))} / {_pct(r.get('energy_in_box'))}"
                         + (" (" + ", ".join(f"{k} {v}" for k, v in r["hits_by_series"].items())
                            + ")"
                            if r.get("hits_by_series") else "")
                         for m, r in methods.items() if isinstance(r, dict) and r.get("n")))
    lesion = card.get("lesion_sensitivity") or {}
    if lesion.get("n"):
        called = lesion["called_malignant"]
        lines.append(f"- A mass (up to 3-7 cm, within a lung field) painted into {lesion['n']} "
                     f"{lesion.get('data', 'normal test slices')} "
                     f"(`python -m lungct lab lesion-check`): called malignant "
                     f"{_pct(called['plain'])} plain, {_pct(called['painted'])} with the mass; "
                     f"AUC of P(malignant) painted vs plain {lesion['auc_painted_vs_plain']:.3f}")
    rob = card.get("rendering_robustness") or {}
    kinds = rob.get("kinds") or {}
    if kinds:
        def fig(k: dict) -> str:
            return (f"accuracy {_pct(k.get('accuracy'))}, normal called malignant "
                    f"{_pct(k.get('normal_called_malignant'))}")
        lines.append(f"- Test slices as other hospitals render them (`python -m lungct "
                     f"robustness`): plain {fig(rob.get('plain') or {})}; " + "; ".join(
                         f"{k.replace('_', ' ')} {fig(v)}" for k, v in kinds.items()
                         if k in ("lung_window_imitation", "mediastinal_window_imitation",
                                  "screenshot")))
    return ["", "## Other sources", ""] + lines if lines else []


def write_markdown(folder: str | Path) -> Path:
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    out = folder / "README.md"
    out.write_text(render(card))
    return out
