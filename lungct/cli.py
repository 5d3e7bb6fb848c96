"""Command line: ``python -m lungct {split,leakage,train,evaluate,predict,...}``.

Every command reads params.yaml (``--params``, ``--preset``, ``--set key=value``)
so the CLI, the DVC stages and the app share one configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lungct.config import (LEAKAGE_REPORT, apply_overrides, config_from_args, report_path,
                           resolve)
from lungct.errors import LungctError



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


def cmd_train(args) -> int:
    from lungct.config import model_config
    from lungct.training.run import train_from_config
    cfg, teacher, description = model_config(config_from_args(args), args.name)
    # --set overrides win over the model's entry too
    cfg = apply_overrides(cfg, args.set or ())
    teacher = args.teacher or teacher
    if teacher and not Path(teacher).exists():
        teacher = str(resolve("models") / teacher)
    train_from_config(cfg, args.name, args.out, teacher=teacher,
                      description=args.description or description, limit=args.limit,
                      track=not args.no_mlflow)
    return 0


def cmd_cards(args) -> int:
    from lungct.model_card_md import write_markdown
    from lungct.models import list_shipped
    from lungct.config import models_dir
    for name in args.models or list_shipped():
        print(f"wrote {write_markdown(models_dir() / name)}")
    return 0


def cmd_half(args) -> int:
    from lungct.models import load_model
    from lungct.models.half import store_half
    from lungct.training.validation import validation_inputs
    cfg = config_from_args(args)
    for name in args.models:
        model = load_model(name)
        inputs, split = validation_inputs(model, cfg)
        check = store_half(name, inputs, split, args.tol, model=model)
        print(f"{name}: {check['label_changes']} label changes, max |dp| "
              f"{check['max_prob_diff']:.4f} on {check['images']} {split} images -> "
              f"{'float16' if check['stored'] else 'kept float32'}")
    return 0  # a failed check keeps float32: a bigger file, never a changed model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lungct", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", help="params.yaml to read (default: the repository's)")
    common.add_argument("--preset", help="a preset from params.yaml, e.g. paper or smoke")
    common.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set train.epochs=3")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("split", parents=[common], help="group, split and write data/splits.csv")
    p.add_argument("--out", help="manifest path (default: data.manifest)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("leakage", parents=[common], help="how much each split leaks")
    p.add_argument("--out", help="JSON report path (default: leakage.json in reports.dir)")
    p.set_defaults(func=cmd_leakage)

    p = sub.add_parser("train", parents=[common], help="train or distill one model")
    p.add_argument("--name", required=True, help="model folder name under models/")
    p.add_argument("--out", help="output folder (default: models/NAME)")
    p.add_argument("--teacher", help="teacher model (name or folder): distil from it")
    p.add_argument("--description", help="one line for the model card")
    p.add_argument("--limit", type=int, help="at most N images per class and part (smoke runs)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cards", parents=[common], help="render models/*/README.md from cards")
    p.add_argument("models", nargs="*", help="model names (default: all shipped)")
    p.set_defaults(func=cmd_cards)

    p = sub.add_parser("half", parents=[common],
                       help="store weights in float16 if that changes no label on validation")
    p.add_argument("models", nargs="+", help="model names or folders")
    p.add_argument("--tol", type=float, default=0.02,
                   help="largest allowed change of any class probability (default 0.02)")
    p.set_defaults(func=cmd_half)

    from lungct import cli_case, cli_predict
    cli_predict.add_commands(sub, common)
    cli_case.add_command(sub, common)
    from lungct.pacs import cli as pacs_cli
    pacs_cli.add_command(sub, common)
    from lungct import external, pointing
    external.add_command(sub, common)
    pointing.add_command(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (LungctError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
