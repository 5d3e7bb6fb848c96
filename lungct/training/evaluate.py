"""Final evaluation of a saved model on its own protocol's test split.

Runs the production path (file bytes -> ``decode_image`` -> ``to_tensor`` ->
model), fits a calibration temperature on the validation split (Guo et al.
2017: one scalar, argmax unchanged), and writes into the model card the test
metrics with 95% CIs, ECE before and after calibration, the leakage probe of
the same split for scale, and the model's size and speed. A model is never
evaluated on the other protocol's test part: those images are in its
training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lungct import CLASSES
from lungct.config import LEAKAGE_REPORT, report_path, reports_dir, resolve
from lungct.data.splits import read_manifest, select
from lungct.training.metrics import (classification_report, expected_calibration_error,
                            sensitivity_operating_point)
from lungct.models.stats import model_stats
from lungct.models import load_model
from lungct.models.checkpoint import resolve_model_dir, write_card
from lungct.onnx_runtime import calibrated_softmax
from lungct.preprocess import load_image, to_tensor


def collect_logits(model, root: Path, rows: list[dict], batch_size: int = 32):
    """Uncalibrated logits and labels for manifest rows, through the app's preprocessing."""
    logits, labels = [], []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        x = torch.stack([to_tensor(load_image(root / r["path"]), model.input_size,
                                   model.mean, model.std, getattr(model, "view", "full"))
                         for r in chunk])
        with torch.inference_mode():
            logits.append(model(x).float())
        labels.extend(CLASSES.index(r["label"]) for r in chunk)
    return torch.cat(logits), torch.tensor(labels)


def fit_temperature(logits, labels) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T); tensors or arrays
    (the one fit: evaluation, cross-validation and the probes use it)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def evaluate(name_or_path: str | Path, cfg: dict, protocol: str | None = None,
             part: str = "test", write: bool = True, n_boot: int = 1000,
             stats: bool = True) -> dict:
    """Evaluate one model; update its card and test predictions when ``write``."""
    model = load_model(name_or_path)
    folder = resolve_model_dir(name_or_path)
    card = dict(model.card)
    own = card.get("protocol", "grouped")
    protocol = protocol or own
    if protocol != own:
        raise ValueError(f"{model.name} was trained on the {own} protocol; its {protocol} "
                         f"test images may be in its training data. Evaluate it with "
                         f"--split {own}")
    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    val_logits, val_y = collect_logits(model, root, select(rows, protocol, "val"))
    temperature = fit_temperature(val_logits, val_y)
    test_rows = select(rows, protocol, part)
    logits, y = collect_logits(model, root, test_rows)
    raw = calibrated_softmax(logits.numpy(), 1.0)
    calibrated = calibrated_softmax(logits.numpy(), temperature)
    report = classification_report(y.numpy(), calibrated, n_boot=n_boot)
    card["calibration"] = {
        "method": "temperature scaling fitted on the validation split",
        "temperature": round(temperature, 4),
        "ece_before": expected_calibration_error(y.numpy(), raw),
        "ece_after": report["ece"]}
    card[f"{part}_metrics"] = report
    val_calibrated = calibrated_softmax(val_logits.numpy(), temperature)
    card["operating_point"] = sensitivity_operating_point(
        val_y.numpy(), val_calibrated, y.numpy(), calibrated, n_boot=n_boot)
    card["evaluated_on"] = {"protocol": protocol, "part": part, "n": len(test_rows)}
    leakage = report_path(cfg, LEAKAGE_REPORT)
    if leakage.exists():
        probe = json.loads(leakage.read_text())[protocol]
        card["leakage_probe"] = {k: probe[k] for k in ("pixel_1nn_accuracy",
                                                      "share_test_with_twin")}
    if stats:
        # latency is measured by the benchmark, on a quiet machine, not here
        card["stats"] = {**card.get("stats", {}), **model_stats(model, folder)}
    if write:
        write_card(folder, card)
        preds = {"protocol": protocol, "part": part, "classes": list(CLASSES),
                 "temperature": temperature,
                 "rows": [{"path": r["path"], "label": r["label"],
                           "probs": [round(float(p), 6) for p in probs]}
                          for r, probs in zip(test_rows, calibrated)]}
        (folder / f"{part}_predictions.json").write_text(json.dumps(preds) + "\n")
        summary = {"accuracy": report["accuracy"], "malignant_recall": report["malignant_recall"],
                   "auc_malignant": report["roc_auc"]["malignant"], "ece": report["ece"],
                   "ece_uncalibrated": card["calibration"]["ece_before"],
                   "benign_recall": report["per_class"]["benign"]["recall"],
                   "screening_malignant_recall": card["operating_point"]["test"]["recall"],
                   "screening_false_alarm_rate":
                       card["operating_point"]["test"]["false_alarm_rate"]}
        reports = reports_dir(cfg)
        out = reports / "metrics" / f"{model.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
        # actual/predicted pairs for DVC's confusion-matrix plot
        pairs = reports / "predictions" / f"{model.name}.csv"
        pairs.parent.mkdir(parents=True, exist_ok=True)
        pairs.write_text("actual,predicted\n" + "".join(
            f"{CLASSES[int(a)]},{CLASSES[int(p)]}\n"
            for a, p in zip(y.numpy(), calibrated.argmax(1))))
    return card
