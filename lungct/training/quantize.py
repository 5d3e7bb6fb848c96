"""Integer (int8) twin of an exported classifier: ``python -m lungct lab quantize``.

Why: on a small CPU the classifier is most of a slice's time. The 320 px
EfficientNet-Lite student costs 18.6 CPU-ms per image in float32 on ONNX
Runtime and 7.8 in int8 (one thread, batches of 4, a 2-core AVX-512 VM).
EfficientNet-Lite was designed to be quantised (ReLU6, no squeeze-excite).

Static quantisation needs activation ranges, and those need data, which a
user's clone does not have. So the work is split:

1. ``python -m lungct lab quantize --model NAME`` (with the dataset, when a model
   ships) runs the float32 ONNX model over slices of the model's own
   training part, records every activation's minimum and maximum in
   ``models/NAME/int8_calibration.json`` (ONNX Runtime's calibration cache, about
   20 KB, tracked), builds the int8 model as the export does and measures it against the float32
   one on the model's own validation and test parts and on other renderings of
   the validation slices: labels changed, |dp|, accuracy, malignant recall and
   AUC of both (the card's ``int8`` section). The training slices are taken
   plain and in one random other rendering each (lung and mediastinal windows,
   kernels, crops, screenshots): ranges seen on one source's narrow-window
   export alone clipped the activations of other scanners' slices (Lung-PET-CT-Dx:
   35 instead of 37 of 38 tumour-box slices called malignant).
2. ``export`` (so ``make onnx``) builds ``model.int8.onnx`` from ``model.onnx``
   and the committed ranges on any machine (QDQ, per-channel int8 weights,
   uint8 activations) and keeps it only if it agrees with the float32 model
   there, on the parity images, within :data:`MAX_CHANGED` and
   :data:`MAX_MEAN_DIFF`. The check runs on the machine that will use the
   file because integer kernels differ between CPUs (without VNNI, uint8 x
   int8 products can saturate).

``runtime.precision`` (``int8`` | ``float32``; ``LUNGCT_PRECISION``) picks the
file; int8 falls back to float32 when no checked int8 build is there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from lungct import CLASSES
from lungct.config import resolve
from lungct.errors import LungctError
from lungct.onnx_runtime import (CALIBRATION_FILE, INT8_FILE, INT8_RECORD, ONNX_FILE,
                                 OnnxUnavailable, calibrated_softmax, file_sha256, open_session)

CALIBRATION_IMAGES = 128
"""Training slices whose activation ranges are recorded (seeded choice)."""
MAX_CHANGED = 0.03
"""An int8 build is used only if at most this share of the check images change label..."""
MAX_MEAN_DIFF = 0.03
"""...and the mean |p_int8 - p_float32| over them is at most this."""


FORMAT = ("QDQ, per-channel int8 weights, uint8 activations (MinMax ranges); first two "
          "convolutions, last convolution and classifier in float32")


class QuantizeError(LungctError, ValueError):
    """The int8 model cannot be made (no float32 export, no ranges, ranges for another export)."""


def _prepared(folder: Path) -> Path:
    """``model.onnx`` after ONNX Runtime's quantisation pre-processing, in a temporary folder."""
    src = folder / ONNX_FILE
    if not src.exists():
        raise QuantizeError(f"{src} not found: `python -m lungct lab export --model {folder.name}` "
                            "writes it")
    return prepared_for_int8(src)


def float_nodes(model) -> list[str]:
    """The nodes kept in float32: the first two convolutions (the grey levels come in
    there), the last one and the classifier (the logits go out). In an ad-hoc comparison on
    the 188 Lung-PET-CT-Dx slices this halved the int8 model's distance from float32 (mean
    |dp| 0.025 -> 0.012, max 0.34 -> 0.11)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    heads = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return convs[:2] + convs[-1:] + heads


def _quantize(pre: Path, calibration: Path, out: Path) -> None:
    try:
        quantize_with_ranges(pre, calibration, out, float_nodes)
    except OnnxUnavailable as err:
        raise QuantizeError(f"{err}: run `python -m lungct lab quantize` again") from None


def compare(float_clf, int8_session, grays: list[np.ndarray], labels=None,
            batch_size: int = 32) -> dict:
    """float32 vs int8 on the same inputs: labels changed, |dp|, and with ``labels`` the
    accuracy, malignant recall and malignant AUC of both."""
    from lungct.training.metrics import roc_auc_ovr

    pf, pi = [], []
    name = int8_session.session.get_inputs()[0].name
    for i in range(0, len(grays), batch_size):
        x = np.stack([float_clf.prepare(g) for g in grays[i:i + batch_size]])
        pf.append(calibrated_softmax(float_clf.logits(x), float_clf.temperature))
        pi.append(calibrated_softmax(int8_session.session.run(None, {name: x})[0],
                                     float_clf.temperature))
    pf, pi = np.concatenate(pf), np.concatenate(pi)
    diff = np.abs(pf - pi)
    out = {"n": len(grays), "labels_changed": int((pf.argmax(1) != pi.argmax(1)).sum()),
           "max_abs_diff": round(float(diff.max()), 4),
           "mean_abs_diff": round(float(diff.mean()), 4)}
    out["changed_share"] = round(out["labels_changed"] / max(len(grays), 1), 4)
    out["passed"] = bool(out["changed_share"] <= MAX_CHANGED
                         and out["mean_abs_diff"] <= MAX_MEAN_DIFF)
    if labels is not None:
        y = np.asarray(labels)
        m = CLASSES.index("malignant")
        for tag, p in (("float32", pf), ("int8", pi)):
            pred = p.argmax(1)
            out[tag] = {"accuracy": round(float((pred == y).mean()), 4),
                        "malignant_recall": round(float((pred[y == m] == m).mean()), 4),
                        "auc_malignant": round(float(roc_auc_ovr(y, p)[CLASSES[m]] or 0.0), 4)}
    return out


def build_int8(folder: str | Path, float_clf, paths: list[Path], source: str,
               labels=None) -> dict:
    """Build ``model.int8.onnx`` from ``model.onnx`` and the committed ranges and check it on
    ``paths`` (the parity images; with their ``labels``, accuracy too) on this machine.
    Returns the build record (also written to ``int8.json``, a build output); a failed check
    removes the file. QuantizeError when the folder has no ranges."""
    from lungct.preprocess import load_image

    folder = Path(folder)
    calibration = folder / CALIBRATION_FILE
    if not calibration.exists():
        raise QuantizeError(f"{calibration} not found: `python -m lungct lab quantize --model "
                            f"{folder.name}` (with the dataset) records the ranges")
    pre = _prepared(folder)
    try:
        _quantize(pre, calibration, folder / INT8_FILE)
    finally:
        shutil.rmtree(pre.parent, ignore_errors=True)
    session = open_session(folder / INT8_FILE, float_clf.onnx_model.threads
                           if float_clf.onnx_model else 0)
    check = {**compare(float_clf, session, [load_image(p) for p in paths], labels),
             "images": source}
    record = {"file": INT8_FILE, "from": ONNX_FILE, "onnx_sha256": file_sha256(folder / INT8_FILE),
              "float32_sha256": file_sha256(folder / ONNX_FILE),
              "calibration_sha256": file_sha256(calibration),
              "size_mb": round((folder / INT8_FILE).stat().st_size / 2**20, 2),
              "format": FORMAT, "check": check}
    if not check["passed"]:
        (folder / INT8_FILE).unlink(missing_ok=True)
    (folder / INT8_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def calibrate_model(name_or_path: str | Path, cfg: dict, n_images: int = CALIBRATION_IMAGES,
                    seed: int = 0, write_card_: bool = True) -> dict:
    """Record the ranges from the model's own training part, build the int8 model and
    measure it on the model's own validation and test parts (the card's ``int8``)."""
    from lungct.data.splits import read_manifest, select
    from lungct.guard.variants import random_variant
    from lungct.inference import Classifier
    from lungct.models.checkpoint import read_card, resolve_model_dir, write_card
    from lungct.preprocess import load_image

    folder = resolve_model_dir(name_or_path)
    card = read_card(folder)
    clf = Classifier.from_name(folder, backend="onnx", cfg=cfg, precision="float32")
    protocol = card.get("protocol", "grouped")
    root = resolve(cfg["data"]["root"])
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    train = select(rows, protocol, "train")
    if not train or not (root / train[0]["path"]).exists():
        raise FileNotFoundError(f"the {protocol} training images are not under {root}: "
                                "calibration needs the dataset (LUNGCT_DATA)")
    rng = np.random.default_rng(seed)
    chosen = [train[i] for i in sorted(rng.choice(len(train), min(n_images, len(train)),
                                                  replace=False))]
    grays = [load_image(root / r["path"]) for r in chosen]
    # the ranges must cover what other hospitals send, not only this source's narrow-window
    # export: a clipped activation is a wrong answer on exactly those slices
    inputs = np.stack([clf.prepare(g) for g in grays + [random_variant(g, rng) for g in grays]])
    pre = _prepared(folder)
    try:
        record_ranges(pre, inputs, folder / CALIBRATION_FILE)
    finally:
        shutil.rmtree(pre.parent, ignore_errors=True)
    test = select(rows, protocol, "test")
    # as the export builds and checks it (its parity images: this same test part)
    build = build_int8(folder, clf, [root / r["path"] for r in test],
                       f"{len(test)} test images of the {protocol} protocol",
                       [CLASSES.index(r["label"]) for r in test])
    if not build["check"]["passed"]:
        raise QuantizeError(f"the int8 model disagrees with model.onnx on "
                            f"{build['check']['images']}: {build['check']}")
    session = open_session(folder / INT8_FILE, clf.onnx_model.threads)
    val = select(rows, protocol, "val")
    checks = {"val": compare(clf, session, [load_image(root / r["path"]) for r in val],
                             [CLASSES.index(r["label"]) for r in val]),
              "test": {k: v for k, v in build["check"].items() if k != "images"}}
    other = np.random.default_rng(seed + 1)
    checks["val_other_renderings"] = compare(
        clf, session, [random_variant(load_image(root / r["path"]), other) for r in val],
        [CLASSES.index(r["label"]) for r in val])
    section = {"file": INT8_FILE, "calibration": {
                   "file": CALIBRATION_FILE, "method": "MinMax of every activation",
                   "images": (f"{len(chosen)} slices of the {protocol} training part (seed "
                              f"{seed}), each also in one random other rendering "
                              "(lungct.guard.variants.random_variant)")},
               "format": FORMAT,
               "used_when": (f"runtime.precision int8 and the local build agrees with "
                             f"model.onnx (labels changed <= {MAX_CHANGED:.0%}, mean |dp| <= "
                             f"{MAX_MEAN_DIFF})"),
               **checks}
    if write_card_:
        fresh = read_card(folder)
        fresh["int8"] = section
        write_card(folder, fresh)
    return section


def format_check(name: str, section: dict) -> str:
    lines = [f"{name}: int8 ({section['calibration']['images']})"]
    for part in ("val", "test", "val_other_renderings"):
        c = section[part]
        f, i = c.get("float32", {}), c.get("int8", {})
        lines.append(
            f"  {part} ({c['n']}): {c['labels_changed']} labels changed, mean |dp| "
            f"{c['mean_abs_diff']}, max {c['max_abs_diff']}; accuracy {f.get('accuracy')} -> "
            f"{i.get('accuracy')}, malignant recall {f.get('malignant_recall')} -> "
            f"{i.get('malignant_recall')}, malignant AUC {f.get('auc_malignant')} -> "
            f"{i.get('auc_malignant')}")
    return "\n".join(lines)


def cmd_quantize(args) -> int:
    from lungct.config import config_from_args

    cfg = config_from_args(args)
    for name in args.model:
        section = calibrate_model(name, cfg, args.images, args.seed,
                                  write_card_=not args.no_write)
        print(format_check(name, section), flush=True)
    return 0


def add_command(sub, common) -> None:
    p = sub.add_parser("quantize", parents=[common],
                       help="record int8 activation ranges on a model's training slices and "
                            "measure the int8 model (needs the dataset and model.onnx)")
    p.add_argument("--model", nargs="+", action="extend", required=True,
                   help="model names or folders")
    p.add_argument("--images", type=int, default=CALIBRATION_IMAGES,
                   help=f"training slices to calibrate on (default {CALIBRATION_IMAGES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true",
                   help="print the check, leave the card unchanged")
    p.set_defaults(func=cmd_quantize)


# ------------------------------------------- int8 builds (models and the guard)

def prepared_for_int8(src: str | Path) -> Path:
    """``src`` after ONNX Runtime's quantisation pre-processing, in a new temporary folder
    (the caller removes the folder)."""
    import tempfile

    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(tempfile.mkdtemp(prefix="lungct-int8-")) / "pre.onnx"
    quant_pre_process(str(src), str(out))
    return out


def quantize_with_ranges(pre: Path, calibration: Path, out: Path, keep_float=None) -> None:
    """``pre`` -> int8 ``out`` (QDQ, per-channel int8 weights, uint8 activations) with the
    ranges recorded in ``calibration``; ``keep_float(model)`` names nodes left in float32.

    Never recalibrates and never writes ``calibration`` (ONNX Runtime may rewrite a cache it
    reads, so it reads a copy). OnnxUnavailable when the ranges name tensors this model
    lacks (ranges recorded for another export).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cache = pre.with_name("ranges.json")
    shutil.copyfile(calibration, cache)
    names = set(json.loads(cache.read_text())["data"])
    model = onnx.load(str(pre))
    known = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    if not names <= known:
        raise OnnxUnavailable(f"{calibration} records ranges of {len(names - known)} tensors "
                              "this export does not have (another exporter version)")
    tmp = out.with_name(out.name + ".tmp")
    try:
        quantize_static(str(pre), str(tmp), None, calibration_cache_path=str(cache),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep_float(model) if keep_float else [])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def record_ranges(pre: Path, inputs: np.ndarray, calibration: Path) -> None:
    """Every activation's minimum and maximum over ``inputs`` (N, C, H, W), run one by one
    through ``pre``, written to ``calibration`` (MinMax; sorted keys: the same ranges give
    the same bytes)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data
    import onnx

    name = onnx.load(str(pre)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter({name: x[None]} for x in inputs)

        def get_next(self):
            return next(self._it, None)

    calibrator = create_calibrator(str(pre), None,
                                   augmented_model_path=str(pre.with_name("augmented.onnx")),
                                   calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(Reader())
    save_tensors_data(calibrator.compute_data(), calibration)
    calibration.write_text(json.dumps(json.loads(calibration.read_text()), sort_keys=True),
                           encoding="utf-8")
