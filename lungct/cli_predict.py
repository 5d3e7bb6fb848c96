"""CLI commands that use trained models: ``predict``, ``evaluate`` and ``export``.

``predict`` classifies files and folders in batches through the case
pipeline (``lungct.case.iter_results``): a background thread pool reads and
decodes the next files (a bounded look-ahead) while the model runs on the
current batch, so decoding overlaps inference. Results come out
in input order; a bad file gives ``{"file", "error"}`` and the rest go on.
The exit status is 2 on misuse (unknown model, bad options) and 1 when
every file failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

from lungct import CLASSES
from lungct.data.discover import IMAGE_SUFFIXES

CSV_COLUMNS = ("file", "label", *(f"p_{c}" for c in CLASSES), "unsure", "model", "backend",
               "ood_score", "error")


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


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _reader(path: Path) -> Callable:
    """A zero-argument loader of ``path`` (run in a decode thread); read errors become text."""
    from lungct.series import SliceFile, read_slice

    def read():
        try:
            return read_slice(str(path), path.read_bytes())
        except OSError as err:
            return SliceFile(name=str(path), error=_reason(err))
    return read


def result_row(path: Path, r) -> dict:
    """``predict``'s record of one ``lungct.case.SliceResult``: the file, then result or error."""
    row = ({"file": str(path), **r.prediction.as_dict()} if r.ok
           else {"file": str(path), "error": r.error})
    if r.guard is not None:
        row["ood"] = r.guard
    if r.status in ("refused", "outside_lungs"):
        row["rejected"] = True
        if r.status == "outside_lungs":
            row["outside_lungs"] = True
    return row


def predict_paths(clf, paths: list[Path], window: str = "lung", batch_size: int = 32,
                  workers: int = 1, progress: bool | None = None,
                  guard=None) -> Iterator[dict]:
    """One result dict per path, in order: ``{"file", **prediction}`` or ``{"file", "error"}``.

    The case pipeline (``lungct.case.iter_results``) runs underneath: files are
    read and decoded ``workers`` threads ahead of the model, each batch of
    ``batch_size`` is screened by the ``OODGuard`` (when given) and classified
    in one forward pass. With a guard, results carry ``"ood"`` (its verdict),
    and a refused slice gets ``{"file", "error", "rejected": true, "ood"}``.
    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    from tqdm import tqdm

    from lungct.case import iter_results

    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, mininterval=0.5,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        results = iter_results(clf, [_reader(p) for p in paths], len(paths), guard, window,
                               batch_size, workers, keep_pixels=False)
        for path, r in zip(paths, results):
            bar.update(1)
            yield result_row(path, r)
    finally:
        bar.close()


def _csv_row(out: dict) -> dict:
    row = {"file": out["file"], "error": out.get("error", ""),
           "ood_score": (out.get("ood") or {}).get("score", "")}
    if "error" not in out:
        row.update(label=out["label"], unsure=str(bool(out["unsure"])).lower(),
                   model=out["model"], backend=out.get("backend", ""))
        for c in CLASSES:
            row[f"p_{c}"] = f"{out['probabilities'][c]:.6f}"
    return row


def _print_result(out: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out), flush=True)
    elif "error" in out:
        print(f"{out['file']}: ERROR {out['error']}", flush=True)
    else:
        probs = " ".join(f"{k}={v:.3f}" for k, v in out["probabilities"].items())
        flag = "  (unsure)" if out["unsure"] else ""
        print(f"{out['file']}: {out['label']}{flag}  [{probs}]  model={out['model']} "
              f"backend={out['backend']}", flush=True)


def load_model_and_guard(args, cfg: dict):
    """(classifier, guard or None) as ``args`` say, or an exit status after an error message."""
    from lungct.inference import Classifier
    from lungct.models import ModelLoadError
    from lungct.onnx_runtime import OnnxUnavailable

    name = args.model or cfg["app"]["default_model"]
    try:
        clf = Classifier.from_name(name, cfg["app"]["unsure_below"], backend=args.backend,
                                   threads=args.threads, cfg=cfg)
    except (ModelLoadError, OnnxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    guard = None
    if cfg.get("ood", {}).get("enabled", True) and not args.no_guard:
        from lungct.case import load_guard
        from lungct.guard import GuardLoadError
        try:
            guard = load_guard(cfg)
        except GuardLoadError as err:
            print(f"error: the input guard could not be loaded ({err}); "
                  "use --no-guard to classify without it", file=sys.stderr)
            return 2
    return clf, guard


def add_model_options(p) -> None:
    """The options ``predict``, ``case`` and ``pacs`` share: model, guard, window, backend."""
    p.add_argument("--model", help="model name under models/ or a folder (default: app's)")
    p.add_argument("--no-guard", action="store_true",
                   help="skip the input guard (is this a lung CT slice?): not recommended")
    p.add_argument("--window", choices=["lung", "mediastinal", "file"],
                   help="DICOM window (default: preprocess.dicom_window)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"],
                   help="inference backend (default: LUNGCT_BACKEND or runtime.backend)")
    p.add_argument("--threads", type=int,
                   help="ONNX Runtime threads (default: runtime.threads; 0 = one per core)")


def cmd_predict(args) -> int:
    from lungct.config import config_from_args

    cfg = config_from_args(args)
    if args.batch_size < 1 or args.workers < 1:
        print("error: --batch-size and --workers must be at least 1", file=sys.stderr)
        return 2
    loaded = load_model_and_guard(args, cfg)
    if isinstance(loaded, int):
        return loaded
    clf, guard = loaded
    window = args.window or cfg["preprocess"]["dicom_window"]
    paths = expand_inputs(args.files)
    if not paths:
        print("note: no image files found in the given folders", file=sys.stderr)
    writer = fh = None
    if args.csv:
        try:
            fh = open(args.csv, "w", newline="", encoding="utf-8")
        except OSError as err:
            print(f"error: cannot write {args.csv}: {_reason(err)}", file=sys.stderr)
            return 2
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
    n = failed = 0
    try:
        for out in predict_paths(clf, paths, window, args.batch_size, args.workers,
                                 args.progress, guard=guard):
            n += 1
            failed += "error" in out
            _print_result(out, args.json)
            if writer is not None:
                writer.writerow(_csv_row(out))
        sys.stdout.flush()
    finally:
        if fh is not None:
            fh.close()
    if args.csv:
        print(f"wrote {args.csv}: {n} rows ({failed} with an error); model {clf.name} on "
              f"{clf.backend}", file=sys.stderr)
    if n and failed == n:
        print(f"error: none of the {n} files could be classified", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from lungct.config import config_from_args
    from lungct.evaluate import evaluate
    from lungct.metrics import format_operating_point, format_report

    cfg = config_from_args(args)
    card = evaluate(args.model, cfg, protocol=args.split, write=not args.no_write)
    part = "test"
    print(format_report(card[f"{part}_metrics"],
                        title=f"{card['name']} on the {card['evaluated_on']['protocol']} "
                              f"{part} split (calibrated, T={card['calibration']['temperature']})"))
    print(f"ECE before calibration {card['calibration']['ece_before']:.4f}, "
          f"after {card['calibration']['ece_after']:.4f}")
    print(format_operating_point(card["operating_point"]))
    if "leakage_probe" in card:
        print(f"leakage probe on this split: pixel 1-NN accuracy "
              f"{card['leakage_probe']['pixel_1nn_accuracy']:.3f}")
    return 0


def add_commands(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify image or DICOM files")
    p.add_argument("files", nargs="+", help="files or folders")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per input per line")
    p.add_argument("--csv", metavar="OUT", help="also write one CSV row per input to OUT")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=1,
                   help="threads reading and decoding files ahead of the model (default 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", parents=[common],
                       help="test metrics of a model on its own protocol's test split")
    p.add_argument("--model", required=True, help="model name or folder")
    p.add_argument("--split", choices=["grouped", "paper"],
                   help="protocol (must be the model's own; default: the model's)")
    p.add_argument("--no-write", action="store_true", help="do not update the model card")
    p.set_defaults(func=cmd_evaluate)

    from lungct.onnx_export import add_command
    add_command(sub, common)
