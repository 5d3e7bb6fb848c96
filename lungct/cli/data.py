"""The data commands: ``split`` (write the split manifest), ``leakage`` (what each split leaks)."""

from __future__ import annotations

import json
from pathlib import Path

from lungct.config import LEAKAGE_REPORT, config_from_args, report_path, resolve


def cmd_split(args) -> int:
    from lungct.data.splits import build_manifest, write_manifest
    cfg = config_from_args(args)
    g = cfg["grouping"]
    rows = build_manifest(resolve(cfg["data"]["root"]), cfg["data"]["fractions"],
                          cfg["data"]["seed"], g["thumb_size"], g["neighbour_corr"],
                          g["twin_corr"])
    out = Path(args.out) if args.out else resolve(cfg["data"]["manifest"])
    write_manifest(rows, out)
    from lungct.data.summary import format_summary, split_summary
    print(format_summary(split_summary(rows)))
    print(f"wrote {out}")
    return 0


def cmd_leakage(args) -> int:
    from lungct.data.leakage import format_leakage, leakage_report
    from lungct.data.splits import read_manifest
    cfg = config_from_args(args)
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    report = leakage_report(resolve(cfg["data"]["root"]), rows, cfg["grouping"]["twin_corr"],
                            cfg["data"]["seed"])
    print(format_leakage(report))
    out = Path(args.out) if args.out else report_path(cfg, LEAKAGE_REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def add_split(sub, common) -> None:
    p = sub.add_parser("split", parents=[common], help="group, split and write data/splits.csv")
    p.add_argument("--out", help="manifest path (default: data.manifest)")
    p.set_defaults(func=cmd_split)


def add_leakage(sub, common) -> None:
    p = sub.add_parser("leakage", parents=[common], help="how much each split leaks")
    p.add_argument("--out", help="JSON report path (default: leakage.json in reports.dir)")
    p.set_defaults(func=cmd_leakage)
