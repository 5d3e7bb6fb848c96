"""Export saved models to ONNX and prove the export right: ``python -m lungct lab export``.

For each model folder with weights this writes ``model.onnx`` (raw logits,
dynamic batch axis, opset 17, the TorchScript exporter: the dynamo one needs
onnxscript) and adds to the card an ``"onnx"`` section with the preprocessing
contract and a parity check: the PyTorch model and the ONNX Runtime session
classify the test images of the model's own protocol (the committed
``samples/*.jpg`` when the dataset is absent) through the production path,
and the labels must be identical and the calibrated probabilities agree
within ``runtime.parity_max_diff`` (1e-3); whether they also agree within the
stricter 1e-4 is recorded (see :func:`parity_check` for why a correct export
of a trained EfficientNet can miss it). An export that fails parity is kept
for inspection but marked, and the runtime refuses it.

The ONNX file also carries the contract and the SHA-256 of the weights it
came from in its metadata, so a retrained model with a stale ONNX file is
detected at load time (see :func:`lungct.onnx_runtime.load_onnx`).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from lungct.config import resolve
from lungct.onnx_runtime import (BUILD_RECORD, INPUT_NAME, METADATA_KEY, ONNX_FILE, OPSET,
                                 OUTPUT_NAME, PARITY_MAX_DIFF, calibrated_softmax, contract_of,
                                 file_sha256, load_onnx, open_session, runtime_settings,
                                 save_onnx)

PARITY_TOLERANCE = 1e-4
"""The issue's strict bound on |p_onnx - p_torch|: recorded as ``within_tolerance``."""


def export_onnx(model: torch.nn.Module, path: str | Path, weights_sha256: str | None = None,
                opset: int = OPSET) -> Path:
    """Write ``model`` (with lungct attributes: input_size, mean, std, classes) as ONNX.

    Written to a temporary name and renamed, so a crash never leaves a
    half-written model.onnx behind.
    """
    model = model.eval()
    card = {"arch": model.arch, "classes": list(model.classes),
            "input_size": int(model.input_size), "mean": list(model.mean),
            "std": list(model.std), "view": getattr(model, "view", "full")}
    meta = {**contract_of(card), "arch": model.arch, "weights_sha256": weights_sha256,
            "output": "logits", "opset": opset}
    return save_onnx(model, int(model.input_size), path, [OUTPUT_NAME], METADATA_KEY, meta,
                     opset)


def parity_inputs(card: dict, cfg: dict, limit: int | None = None) -> tuple[list[Path], str]:
    """Images for the parity check and a description of where they come from.

    The test part of the model's own protocol when the manifest and the dataset
    are present, else the committed samples/*.jpg.
    """
    from lungct.data.splits import read_manifest, select

    protocol = card.get("protocol", "grouped")
    root = resolve(cfg["data"]["root"])
    try:
        rows = select(read_manifest(resolve(cfg["data"]["manifest"])), protocol, "test")
        paths = [root / r["path"] for r in rows]
        if paths and all(p.exists() for p in paths):
            if limit:
                paths = paths[:limit]
            return paths, f"{len(paths)} test images of the {protocol} protocol"
        reason = f"dataset not found under {root}"
    except (FileNotFoundError, ValueError) as err:
        reason = str(err)
    paths = sorted(resolve("samples").glob("*.jpg"))
    if not paths:
        raise FileNotFoundError("no dataset and no samples/*.jpg for the parity check")
    if limit:
        paths = paths[:limit]
    return paths, f"{len(paths)} committed samples/*.jpg (dataset absent: {reason})"


def parity_check(torch_clf, onnx_clf, paths: list[Path], batch_size: int = 32,
                 max_diff: float = PARITY_MAX_DIFF) -> dict:
    """Compare two Classifiers (same card) on files, through the production path.

    ``passed`` (what the runtime requires): identical labels and calibrated
    probabilities within ``max_diff`` (``runtime.parity_max_diff``, 1e-3).
    ``within_tolerance``: the stricter 1e-4 bound. Trained EfficientNets can
    miss it with a correct export: BatchNorm channels with near-zero variance
    scale float32 rounding up by several hundred, so two valid float32
    evaluations of the same network differ by about 1e-4. When the strict
    bound is missed, ``torch_noise_floor`` records how far PyTorch moves from
    itself with its oneDNN kernels switched off, for scale.
    """
    from lungct.preprocess import load_image

    def batches():
        for i in range(0, len(paths), batch_size):
            yield np.stack([torch_clf.prepare(load_image(p)) for p in paths[i:i + batch_size]])

    worst_p = worst_logit = 0.0
    same = True
    for x in batches():
        a, b = torch_clf.logits(x), onnx_clf.logits(x)
        pa = calibrated_softmax(a, torch_clf.temperature)
        pb = calibrated_softmax(b, onnx_clf.temperature)
        worst_p = max(worst_p, float(np.abs(pa - pb).max()))
        worst_logit = max(worst_logit, float(np.abs(a - b).max()))
        same = same and bool((pa.argmax(1) == pb.argmax(1)).all())
    out = {"n": len(paths), "max_abs_diff": float(f"{worst_p:.3g}"),
           "max_abs_logit_diff": float(f"{worst_logit:.3g}"), "labels_identical": same,
           "tolerance": PARITY_TOLERANCE, "within_tolerance": worst_p <= PARITY_TOLERANCE}
    if worst_p > PARITY_TOLERANCE:
        noise = 0.0
        for x in batches():
            a = torch_clf.logits(x)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an irrelevant TF32-on-Intel-GPU notice
                with torch.backends.mkldnn.flags(enabled=False):
                    c = torch_clf.logits(x)
            noise = max(noise, float(np.abs(calibrated_softmax(a, torch_clf.temperature) -
                                            calibrated_softmax(c, torch_clf.temperature)).max()))
        out["torch_noise_floor"] = float(f"{noise:.3g}")
    out["max_diff_allowed"] = max_diff
    out["passed"] = bool(same and worst_p <= max_diff)
    return out


def export_model(name_or_path: str | Path, cfg: dict, limit: int | None = None,
                 opset: int = OPSET, write_card_: bool = False) -> dict:
    """Export one model folder and check parity; returns the export record.

    The record goes to ``onnx.json`` beside ``model.onnx`` (build outputs, not
    tracked); only ``write_card_`` (``export --write-card``, used when a model
    ships) also stores it in the tracked card.

    Raises ModelLoadError when the weights are missing or unusable.
    """
    import onnx
    import onnxruntime

    from lungct.inference import Classifier
    from lungct.models import load_model
    from lungct.models.checkpoint import WEIGHTS_FILE, read_card, resolve_model_dir, write_card

    folder = resolve_model_dir(name_or_path)
    model = load_model(folder)  # ModelLoadError if the weights are absent or corrupt
    card = dict(model.card)
    weights_sha = file_sha256(folder / WEIGHTS_FILE)
    path = export_onnx(model, folder / ONNX_FILE, weights_sha, opset)
    settings = runtime_settings(cfg)
    onnx_clf = Classifier(None, onnx=open_session(path, settings.threads), card=card,
                          folder=folder)
    torch_clf = Classifier(model, card=card, folder=folder)
    paths, source = parity_inputs(card, cfg, limit)
    parity = {**parity_check(torch_clf, onnx_clf, paths, max_diff=settings.parity_max_diff),
              "images": source}
    size = int(card["input_size"])
    section = {
        "file": ONNX_FILE, "opset": opset, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "input_shape": ["batch", 3, size, size], "dtype": "float32",
        "dynamic_axes": {INPUT_NAME: {"0": "batch"}, OUTPUT_NAME: {"0": "batch"}},
        **contract_of(card),
        "preprocessing": (f"grey slice in [0, 1] -> square bilinear resize to {size}x{size} -> "
                          "replicated to 3 channels -> (x - mean) / std per channel, NCHW"),
        "output": ("raw logits in class order; probabilities = "
                   "softmax(logits / calibration.temperature)"),
        "weights_sha256": weights_sha, "onnx_sha256": file_sha256(path),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "exported_with": {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__, "exporter": "torchscript"},
        "parity": parity}
    (folder / BUILD_RECORD).write_text(json.dumps(section, indent=2) + "\n", encoding="utf-8")
    fresh = read_card(folder)  # keep whatever else wrote the card meanwhile
    if write_card_:
        fresh["onnx"] = section
        write_card(folder, fresh)
    if parity["passed"]:
        # the runtime's own checks accept it
        load_onnx(folder, fresh, settings.threads, parity_max_diff=settings.parity_max_diff)
        from lungct.training.quantize import CALIBRATION_FILE, QuantizeError, build_int8
        if (folder / CALIBRATION_FILE).exists():
            try:
                return {**section, "int8": build_int8(folder, onnx_clf, paths, source)}
            except QuantizeError as err:  # float32 serves; the message says how to fix it
                return {**section, "int8_error": str(err)}
    return section


def format_section(name: str, section: dict) -> str:
    p = section["parity"]
    verdict = "OK" if p["passed"] else "FAILED"
    strict = ("within" if p["within_tolerance"] else "above") + f" {p['tolerance']:g}"
    if "torch_noise_floor" in p:
        strict += (f"; PyTorch's own float32 noise on these images: "
                   f"{p['torch_noise_floor']:.2g}")
    line = (f"{name}: {section['file']} ({section['size_mb']} MB, opset {section['opset']}); "
            f"parity {verdict} on {p['images']}: labels identical {p['labels_identical']}, "
            f"max |dp| {p['max_abs_diff']:.2g} ({strict}; allowed {p['max_diff_allowed']:g}), "
            f"max |dlogit| {p['max_abs_logit_diff']:.2g}")
    if "int8_error" in section:
        line += f"\n{name}: no int8 model (float32 serves): {section['int8_error']}"
    if "int8" in section:
        q = section["int8"]
        c = q["check"]
        line += (f"\n{name}: {q['file']} ({q['size_mb']} MB) "
                 f"{'kept' if c['passed'] else 'REMOVED (float32 serves)'}: against model.onnx "
                 f"on the same images {c['labels_changed']} of {c['n']} labels changed, mean "
                 f"|dp| {c['mean_abs_diff']}, max {c['max_abs_diff']}")
    return line


def cmd_export(args) -> int:
    from lungct.config import config_from_args
    from lungct.models import ModelLoadError, list_shipped
    from lungct.config import models_dir
    from lungct.models.checkpoint import WEIGHTS_FILE

    cfg = config_from_args(args)
    names = args.model or list_shipped()
    if not names:
        print(f"error: no models with a card under {models_dir(cfg)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        explicit = bool(args.model)
        folder = Path(name) if Path(name).is_dir() else models_dir(cfg) / name
        if not explicit and not (folder / WEIGHTS_FILE).exists():
            print(f"skip {name}: no {WEIGHTS_FILE} (a DVC output: `dvc pull` or `dvc repro`)",
                  file=sys.stderr)
            continue
        try:
            section = export_model(name, cfg, limit=args.limit, opset=args.opset,
                                   write_card_=args.write_card)
        except ModelLoadError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            status = 1
            continue
        except Exception as err:  # e.g. an operator ONNX cannot express: PyTorch serves it
            print(f"error: {name}: ONNX export failed ({type(err).__name__}: "
                  f"{str(err).splitlines()[0][:200]}); it will run on PyTorch", file=sys.stderr)
            status = 1
            continue
        print(format_section(name, section), flush=True)
        if not section["parity"]["passed"]:
            print(f"error: {name}: the ONNX export disagrees with PyTorch; the runtime will "
                  "not use it", file=sys.stderr)
            status = 1
    return status


def add_command(sub, common) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="export models to ONNX (models/NAME/model.onnx) with a parity check")
    p.add_argument("--model", nargs="+", action="extend",
                   help="model names or folders (default: every shipped model with weights)")
    p.add_argument("--limit", type=int, help="at most N images in the parity check")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--write-card", action="store_true",
                   help="also store the export record in the tracked card (when shipping a "
                        "model); by default it goes to models/NAME/onnx.json only")
    p.set_defaults(func=cmd_export)
