"""``python -m lungct guard fit|check``: fit the input guard, or ask it about files.

Also runs as ``python -m lungct guard fit|check`` (dvc.yaml's guard stage). An
unusable guard or fit data is one ``error:`` line and exit status 2
(``lungct.errors.run_command``).
"""

from __future__ import annotations

import argparse

import json
import sys
import tempfile
from pathlib import Path

from lungct.config import config_from_args, config_options
from lungct.guard.model import CARD_FILE, WEIGHTS_FILE, InputGuard

def add_arguments(parser) -> None:
    common = config_options()
    sub = parser.add_subparsers(dest="guard_command", required=True)
    p = sub.add_parser("fit", parents=[common],
                       help="fit on IQ-OTH/NCCD train (+ one Lung-PET-CT-Dx patient)")
    p.add_argument("--out", help="folder (default: models/ood_guard)")
    p.add_argument("--external", help="Lung-PET-CT-Dx folder (default: params data.external)")
    p.add_argument("--fit-patient", help="the Lung-PET-CT-Dx patient that joins the fit "
                                         "(the other is held out and reported)")
    p.add_argument("--both-ways", action="store_true",
                   help="also fit on the held-out patient (not saved) and record that fit's "
                        "report in the card as report_other_way")
    p.set_defaults(func=cmd_fit)
    p = sub.add_parser("caution", parents=[common],
                       help="fit the rendering caution's score on IQ-OTH/NCCD train, set its "
                            "limit on val, measure it on test and Lung-PET-CT-Dx; writes "
                            "caution.safetensors and guard.json's caution section")
    p.add_argument("--guard", help="guard folder (default: models/ood_guard)")
    p.add_argument("--external", help="Lung-PET-CT-Dx folder (default: params data.external)")
    p.set_defaults(func=cmd_caution)
    p = sub.add_parser("check", parents=[common],
                       help="verdicts for image or DICOM files (JSON lines)")
    p.add_argument("files", nargs="+")
    p.add_argument("--guard", help="guard folder (default: models/ood_guard)")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("export", parents=[common],
                       help="build extractor.onnx (the fast path) beside the guard, kept only "
                            "if its scores match PyTorch's")
    p.add_argument("--guard", help="guard folder (default: models/ood_guard)")
    p.set_defaults(func=cmd_export)


def cmd_fit(args) -> int:
    from lungct.training.guard_fit import fit_guard
    cfg = config_from_args(args)
    guard = fit_guard(cfg, args.external, args.fit_patient, folder=args.out)
    others = guard.card["report"].get("held_out_patient", {}).get("patients", [])
    if args.both_ways and others:
        with tempfile.TemporaryDirectory() as tmp:   # its int8 ranges are not shipped
            other = fit_guard(cfg, args.external, others[0], folder=tmp)
        guard.card["report_other_way"] = {
            "command": f"python -m lungct guard fit --fit-patient {others[0]} (not shipped)",
            "fit": other.card["fit"], "threshold": other.threshold,
            "min_lung": other.min_lung, "report": other.card["report"]}
    folder = guard.save(args.out)
    print(json.dumps(guard.card["report"], indent=1))
    print(f"wrote {folder / WEIGHTS_FILE} and {folder / CARD_FILE}: threshold "
          f"{guard.threshold:.4f}, min_lung {guard.min_lung:.4f}")
    # the caution's score uses the extractor just built: recalibrate it with the guard
    return cmd_caution(args, InputGuard.load(folder, cfg))


def cmd_caution(args, guard: InputGuard | None = None) -> int:
    from lungct.guard.caution import CAUTION_FILE, calibrate, print_report
    cfg = config_from_args(args)
    guard = guard or InputGuard.load(getattr(args, "guard", None), cfg)
    from lungct.guard.model import guard_config
    section = calibrate(guard, cfg, getattr(args, "external", None), params=guard_config(cfg))
    print_report(section)
    print(f"wrote {guard.folder / CAUTION_FILE} and {guard.folder / CARD_FILE}'s caution section")
    return 0


def cmd_check(args) -> int:
    from lungct.preprocess import InvalidImageError, decode_image
    cfg = config_from_args(args)
    guard = InputGuard.load(args.guard, cfg)
    window_name = cfg.get("preprocess", {}).get("dicom_window", "lung")
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
            verdict = guard.check_upload(data, decode_image(data, name=path.name,
                                                            window=window_name))
            out = {"file": str(path), **verdict.as_dict()}
        except (InvalidImageError, OSError) as err:
            out = {"file": str(path), "error": getattr(err, "strerror", None) or str(err)}
        print(json.dumps(out), flush=True)
    return 0


def cmd_export(args) -> int:
    """Parity on the shipped samples and three random other renderings of each
    (``parity_views``): float32 against PyTorch, int8 against the fit machine's build."""
    from lungct.training.guard_fit import build_exports

    guard = InputGuard.load(args.guard, config_from_args(args))
    record, int8 = build_exports(guard)
    print(json.dumps(record))
    if not record["passed"]:
        print("error: the ONNX extractor disagrees with PyTorch; the guard keeps PyTorch",
              file=sys.stderr)
        return 1
    print(f"wrote {guard.folder / record['file']}")
    print(json.dumps(int8))
    if int8["passed"]:
        print(f"wrote {guard.folder / int8['file']}")
    else:
        why = int8.get("reason") or "its scores differ from the fit machine's build"
        print(f"note: no int8 extractor on this machine ({why}): the guard runs in float32 "
              "with its float32 threshold", file=sys.stderr)
    return 0


def add_command(sub, common) -> None:
    """Register ``guard`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("guard", parents=[common], help="the input guard: fit it, or check files (JSON lines)",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
