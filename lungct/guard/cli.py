"""``python -m lungct.guard fit|check``: fit the input guard, or ask it about files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lungct.guard.model import CARD_FILE, WEIGHTS_FILE, GuardLoadError, InputGuard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungct.guard",
                                     description="the input guard: fit it, or check files")
    parser.add_argument("--params", help="params.yaml to read")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set ood.val_percentile=99.5")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit on IQ-OTH/NCCD train (+ one Lung-PET-CT-Dx patient)")
    p.add_argument("--out", help="folder (default: models/ood_guard)")
    p.add_argument("--external", help="Lung-PET-CT-Dx folder (default: params data.external)")
    p.add_argument("--fit-patient", help="the Lung-PET-CT-Dx patient that joins the fit "
                                         "(the other is held out and reported)")
    p = sub.add_parser("check", help="verdicts for image or DICOM files (JSON lines)")
    p.add_argument("files", nargs="+")
    p.add_argument("--guard", help="guard folder (default: models/ood_guard)")
    args = parser.parse_args(argv)

    from lungct.config import load_config
    cfg = load_config(args.params, overrides=args.set)
    if args.command == "fit":
        from lungct.guard.fit import fit_guard
        try:
            guard = fit_guard(cfg, args.external, args.fit_patient)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        folder = guard.save(args.out)
        print(json.dumps(guard.card["report"], indent=1))
        print(f"wrote {folder / WEIGHTS_FILE} and {folder / CARD_FILE}: threshold "
              f"{guard.threshold:.4f}, min_lung {guard.min_lung:.4f}")
        return 0

    from lungct.preprocess import InvalidImageError, decode_image
    try:
        guard = InputGuard.load(args.guard, cfg)
    except GuardLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
