"""``python -m lungct predict FILES...``: classify image and DICOM files and folders.

Files go in batches through ``lungct.pipeline.batch.predict_paths`` (the case
pipeline, decoding overlapped with inference); results come out in input
order, one line (or JSON object, or CSV row) each. A bad file gives
``{"file", "error"}`` and the rest go on. The exit status is 2 on misuse
(unknown model, bad options) and 1 when every file failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from lungct import CLASSES
from lungct.pipeline.batch import error_reason, expand_inputs, parallel_processes, predict_paths
from lungct.config import config_from_args
from lungct.pipeline.options import add_model_options, findings_option, load_model_and_guard
from lungct.training.first_use import ensure_exports, ensure_model_export

CSV_COLUMNS = ("file", "label", *(f"p_{c}" for c in CLASSES), "unsure", "model", "backend",
               "ood_score", "error", "caution")


def _csv_row(out: dict) -> dict:
    row = {"file": out["file"], "error": out.get("error", ""), "caution": out.get("caution", ""),
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
              f"backend={out['backend']}{_findings_text(out.get('findings'))}", flush=True)
        if out.get("caution"):   # its own line: the reader must not miss it
            print(f"  {out['caution']}", flush=True)


def _findings_text(findings: list | None) -> str:
    """"  findings: 2 (largest 41 mm)" for the terminal; empty when the stage did not run."""
    if findings is None:
        return ""
    if not findings:
        return "  findings: none"
    sizes = [f["diameter_mm"] for f in findings if f.get("diameter_mm") is not None]
    size = f" (largest {max(sizes):.0f} mm)" if sizes else ""
    return f"  findings: {len(findings)}{size}"


def cmd_predict(args) -> int:
    cfg = config_from_args(args)
    if args.batch_size < 1 or args.workers < 1 or (args.processes or 1) < 1:
        print("error: --batch-size, --workers and --processes must be at least 1",
              file=sys.stderr)
        return 2
    paths = expand_inputs(args.files)
    # an explicit --threads alone asks for one process with that many threads
    processes = (1 if args.threads is not None and args.processes is None
                 else parallel_processes(len(paths), args.processes))
    if processes > 1:   # one thread per process: see lungct.pipeline.batch.predict_paths
        args.threads = 1
        cfg["runtime"]["threads"] = 1
    # first use after a plain pip install: the ONNX builds that make onnx makes ahead
    ensure_model_export(args.model or cfg["app"]["default_model"], cfg, args.backend)
    clf, guard = load_model_and_guard(args, cfg)
    ensure_exports(guard)   # the guard's ONNX build on first use (what make onnx does)
    window = args.window or cfg["preprocess"]["dicom_window"]
    if not paths:
        print("note: no image files found in the given folders", file=sys.stderr)
    writer = fh = None
    if args.csv:
        try:
            fh = open(args.csv, "w", newline="", encoding="utf-8")
        except OSError as err:
            print(f"error: cannot write {args.csv}: {error_reason(err)}", file=sys.stderr)
            return 2
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
    n = failed = 0
    try:
        for out in predict_paths(clf, paths, window, args.batch_size, args.workers,
                                 args.progress, guard=guard, processes=processes,
                                 findings=findings_option(args, cfg)):
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


def add_command(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify image or DICOM files")
    p.add_argument("files", nargs="+", help="files or folders")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per input per line")
    p.add_argument("--csv", metavar="OUT", help="also write one CSV row per input to OUT")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=1,
                   help="threads reading and decoding files ahead of the model (default 1)")
    p.add_argument("--processes", type=int, default=None,
                   help="worker processes for a folder of many files, each on one thread "
                        "(default: one per CPU from 64 files on Linux; 1: this process only)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_predict)
