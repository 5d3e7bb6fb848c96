"""CLI commands that use trained models: ``predict`` and ``evaluate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lungct.data.discover import IMAGE_SUFFIXES


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, and the image files inside any folder (sorted)."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and
                              (f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == "")))
        else:
            out.append(p)
    return out


def cmd_predict(args) -> int:
    from lungct.cli import _config
    from lungct.inference import Classifier
    from lungct.models import ModelLoadError, load_model
    from lungct.preprocess import InvalidImageError

    cfg = _config(args)
    name = args.model or cfg["app"]["default_model"]
    try:
        clf = Classifier(load_model(name), cfg["app"]["unsure_below"])
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    window = args.window or cfg["preprocess"]["dicom_window"]
    for path in expand_inputs(args.files):
        try:
            data = path.read_bytes()
            result = clf.predict_bytes(data, name=path.name, window=window).as_dict()
            out = {"file": str(path), **result}
        except (InvalidImageError, OSError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            out = {"file": str(path), "error": reason}
        if args.json:
            print(json.dumps(out), flush=True)
        elif "error" in out:
            print(f"{out['file']}: ERROR {out['error']}", flush=True)
        else:
            probs = " ".join(f"{k}={v:.3f}" for k, v in out["probabilities"].items())
            flag = "  (unsure)" if out["unsure"] else ""
            print(f"{out['file']}: {out['label']}{flag}  [{probs}]  model={out['model']}",
                  flush=True)
    return 0


def cmd_evaluate(args) -> int:
    from lungct.cli import _config
    from lungct.evaluate import evaluate
    from lungct.metrics import format_report

    cfg = _config(args)
    card = evaluate(args.model, cfg, protocol=args.split, write=not args.no_write)
    part = "test"
    print(format_report(card[f"{part}_metrics"],
                        title=f"{card['name']} on the {card['evaluated_on']['protocol']} "
                              f"{part} split (calibrated, T={card['calibration']['temperature']})"))
    print(f"ECE before calibration {card['calibration']['ece_before']:.4f}, "
          f"after {card['calibration']['ece_after']:.4f}")
    if "leakage_probe" in card:
        print(f"leakage probe on this split: pixel 1-NN accuracy "
              f"{card['leakage_probe']['pixel_1nn_accuracy']:.3f}")
    return 0


def add_commands(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify image or DICOM files")
    p.add_argument("files", nargs="+", help="files or folders")
    p.add_argument("--model", help="model name under models/ or a folder (default: app's)")
    p.add_argument("--json", action="store_true", help="one JSON object per input per line")
    p.add_argument("--window", choices=["lung", "mediastinal", "file"],
                   help="DICOM window (default: preprocess.dicom_window)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", parents=[common],
                       help="test metrics of a model on its own protocol's test split")
    p.add_argument("--model", required=True, help="model name or folder")
    p.add_argument("--split", choices=["grouped", "paper"],
                   help="protocol (must be the model's own; default: the model's)")
    p.add_argument("--no-write", action="store_true", help="do not update the model card")
    p.set_defaults(func=cmd_evaluate)
