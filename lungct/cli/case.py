"""``python -m lungct case PATH... [--json]``: one series in, one case verdict out.

PATH is any mix of DICOM files, folders and .zip archives (or raster slices).
The slices are grouped into series (the default one, or ``--series N`` from
``--list-series``), ordered anatomically and run through the case pipeline
(:mod:`lungct.pipeline`). ``--json`` prints ONE JSON object (``Case.as_dict``:
verdict, rule, slices by position, series facts, model and version; no file
names, no patient tags); without it a short table, with the user's own file
names beside each slice (``lungct.pipeline.report.format_case``). Exit status: 0
when at least one slice was classified, 1 when none could be, 2 on misuse.
"""

from __future__ import annotations

import json
import os
import sys

from lungct.config import config_from_args
from lungct.pipeline.options import add_model_options, findings_option, load_model_and_guard
from lungct.training.first_use import ensure_exports, ensure_model_export


def cmd_case(args) -> int:
    from lungct.pipeline import REFUSED_RULE, classify_series
    from lungct.pipeline.report import format_case
    from lungct.pipeline.series import load_study

    cfg = config_from_args(args)
    study = load_study(args.paths, cfg)
    if args.list_series:
        for i, s in enumerate(study.series):
            mark = "  (default)" if s is study.default() else ""
            print(f"{i}: {s.label()}{mark}")
        for p in study.problems:
            print(f"unreadable: {os.path.basename(p.name)}: {p.error}", file=sys.stderr)
        return 0 if study.series else 1
    series = study.pick(args.series)
    if series is None:
        reasons = sorted({p.error for p in study.problems if p.error})
        message = "no readable image in the input" + (f": {'; '.join(reasons[:5])}"
                                                      if reasons else "")
        if args.json:
            print(json.dumps({"verdict": "refused", "rule": REFUSED_RULE, "slices": [],
                              "error": message}))
        print(f"error: {message}", file=sys.stderr)
        return 1
    # first use after a plain pip install: the ONNX builds that make onnx makes ahead
    ensure_model_export(args.model or cfg["app"]["default_model"], cfg, args.backend)
    clf, guard = load_model_and_guard(args, cfg)
    ensure_exports(guard)   # the guard's ONNX build on first use (what make onnx does)
    window = args.window or cfg["preprocess"]["dicom_window"]
    case = classify_series(clf, series, guard, window, args.batch_size,
                           int(cfg["preprocess"].get("max_pixels", 40_000_000)), study,
                           findings=findings_option(args, cfg))
    print(json.dumps(case.as_dict()) if args.json else format_case(case))
    if case.verdict is None:
        print("error: no slice could be classified", file=sys.stderr)
        return 1
    return 0


def add_command(sub, common) -> None:
    p = sub.add_parser("case", parents=[common],
                       help="classify one series (files, folders, .zip) as a case")
    p.add_argument("paths", nargs="+", help="DICOM or image files, folders, .zip archives")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--series", type=int,
                   help="which series of a multi-series input (index from --list-series; "
                        "default: the axial one with the most slices, lung kernel first)")
    p.add_argument("--list-series", action="store_true", help="list the series and stop")
    p.add_argument("--batch-size", type=int, default=32, help="slices per forward pass")
    p.set_defaults(func=cmd_case)

