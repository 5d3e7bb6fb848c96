"""The model commands: ``train``, ``cards``, ``half``, ``evaluate`` (``export``: onnx_export)."""

from __future__ import annotations

from pathlib import Path

from lungct.config import apply_overrides, config_from_args, resolve


def cmd_train(args) -> int:
    from lungct.config import model_config
    from lungct.training.run import train_from_config
    cfg, teacher, description = model_config(config_from_args(args), args.name)
    # --set overrides win over the model's entry too
    cfg = apply_overrides(cfg, getattr(args, "set", None) or ())
    teacher = args.teacher or teacher
    if teacher and not Path(teacher).exists():
        teacher = str(resolve("models") / teacher)
    train_from_config(cfg, args.name, args.out, teacher=teacher,
                      description=args.description or description, limit=args.limit,
                      track=not args.no_mlflow)
    return 0


def cmd_cards(args) -> int:
    from lungct.config import models_dir
    from lungct.lab.model_card_md import write_markdown
    from lungct.models import list_shipped
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


def cmd_evaluate(args) -> int:
    from lungct.training.evaluate import evaluate
    from lungct.training.metrics import format_operating_point, format_report

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


def add_train(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train or distill one model")
    p.add_argument("--name", required=True, help="model folder name under models/")
    p.add_argument("--out", help="output folder (default: models/NAME)")
    p.add_argument("--teacher", help="teacher model (name or folder): distil from it")
    p.add_argument("--description", help="one line for the model card")
    p.add_argument("--limit", type=int, help="at most N images per class and part (smoke runs)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_train)


def add_cards(sub, common) -> None:
    p = sub.add_parser("cards", parents=[common], help="render models/*/README.md from cards")
    p.add_argument("models", nargs="*", help="model names (default: all shipped)")
    p.set_defaults(func=cmd_cards)


def add_half(sub, common) -> None:
    p = sub.add_parser("half", parents=[common],
                       help="store weights in float16 if that changes no label on validation")
    p.add_argument("models", nargs="+", help="model names or folders")
    p.add_argument("--tol", type=float, default=0.02,
                   help="largest allowed change of any class probability (default 0.02)")
    p.set_defaults(func=cmd_half)


def add_evaluate(sub, common) -> None:
    p = sub.add_parser("evaluate", parents=[common],
                       help="test metrics of a model on its own protocol's test split")
    p.add_argument("--model", required=True, help="model name or folder")
    p.add_argument("--split", choices=["grouped", "paper"],
                   help="protocol (must be the model's own; default: the model's)")
    p.add_argument("--no-write", action="store_true", help="do not update the model card")
    p.set_defaults(func=cmd_evaluate)
