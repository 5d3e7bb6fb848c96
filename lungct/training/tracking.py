"""MLflow tracking into a local SQLite store (``mlflow.db``, artifacts in ``mlartifacts/``).

Every run logs its flattened config, per-epoch metrics (the learning curves),
final metrics, the confusion matrix as a figure and the saved model folder
(safetensors + card) as an artifact. ``MLFLOW_TRACKING_URI`` overrides the
store. Nothing about uploaded images ever reaches MLflow: only training runs log.
"""

from __future__ import annotations

import argparse

import contextlib
from pathlib import Path

from lungct import CLASSES
from lungct.config import config_from_args, config_options, resolve


def tracking_uri(cfg: dict) -> str:
    """The store: ``tracking.mlflow_uri`` (``MLFLOW_TRACKING_URI`` wins through ``load_config``).

    A bare ``*.db`` path becomes a local SQLite store (MLflow 3 retired the
    plain file store); other bare paths are used as file URIs.
    """
    uri = (cfg.get("tracking") or {}).get("mlflow_uri") or "mlflow.db"
    if "://" in uri or uri.startswith("sqlite:"):
        return uri
    if uri.endswith(".db"):
        return f"sqlite:///{resolve(uri)}"
    return resolve(uri).as_uri()


def artifact_root(uri: str) -> str:
    """Artifacts beside a local SQLite store (``mlartifacts/`` next to the .db file), so a
    store elsewhere (tests, MLFLOW_TRACKING_URI) never writes into the repository."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return resolve("mlartifacts").as_uri()


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextlib.contextmanager
def mlflow_run(cfg: dict, run_name: str, enabled: bool = True):
    """Yield an object with log_epoch/log_final/log_model, or no-ops when disabled."""
    if not enabled:
        yield _NullRun()
        return
    import mlflow
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    name = cfg.get("tracking", {}).get("experiment", "lungct")
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root(uri))
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name=run_name):
        params = {k: str(v)[:250] for k, v in flatten(cfg).items()}
        mlflow.log_params(params)
        mlflow.set_tag("model_name", run_name)
        yield _MlflowRun(mlflow)


class _NullRun:
    def log_epoch(self, stats: dict) -> None: ...
    def log_final(self, metrics: dict) -> None: ...
    def log_confusion(self, matrix, title: str) -> None: ...
    def log_model(self, folder: Path) -> None: ...


class _MlflowRun(_NullRun):
    def __init__(self, mlflow):
        self.mlflow = mlflow

    def log_epoch(self, stats: dict) -> None:
        step = int(stats.get("epoch", 0))
        self.mlflow.log_metrics({k: float(v) for k, v in stats.items()
                                 if isinstance(v, (int, float)) and k != "epoch"}, step=step)

    def log_final(self, metrics: dict) -> None:
        self.mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()
                                 if isinstance(v, (int, float))})

    def log_confusion(self, matrix, title: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fig.tight_layout()
        self.mlflow.log_figure(fig, "confusion_matrix.png")
        plt.close(fig)

    def log_model(self, folder: Path) -> None:
        self.mlflow.log_artifacts(str(folder), artifact_path="model")


def import_card(cfg: dict, folder: str | Path, with_model: bool = True) -> None:
    """Log a model trained elsewhere (e.g. a GPU box without MLflow) from its card.

    The card holds everything a live run logs: the training config, the
    per-epoch history, the validation report and, next to it, the weights
    (copied into the store as the run's model unless ``with_model`` is False).
    The run is tagged ``imported_from_card`` so it is never mistaken for a
    live one.
    """
    import json
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    training = card.get("training") or {}
    if not training.get("history"):
        raise ValueError(f"{folder}: the card has no training history to import")
    run_cfg = {"train": training.get("config", {}), "data": training.get("data", {}),
               "tracking": cfg.get("tracking", {}), "protocol": card.get("protocol"),
               "teacher": (card.get("teacher") or {}).get("name")}
    with mlflow_run(run_cfg, card.get("name", folder.name)) as run:
        run.mlflow.set_tags({"imported_from_card": "true",
                             "trained_on": str(training.get("device", "unknown")),
                             "card_created": str(card.get("created", ""))})
        for stats in training["history"]:
            run.log_epoch(stats)
        val = card.get("val_metrics") or {}
        run.log_final({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
        if val.get("confusion_matrix"):
            run.log_confusion(val["confusion_matrix"], f"{card.get('name', folder.name)} (val)")
        if with_model:
            run.log_model(folder)


def add_arguments(parser) -> None:
    common = config_options()
    sub = parser.add_subparsers(dest="tracking_command", required=True)
    imp = sub.add_parser("import", parents=[common],
                         help="log models trained without MLflow from their cards")
    imp.add_argument("models", nargs="+", help="model names or folders")
    imp.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from lungct.models.checkpoint import resolve_model_dir
    cfg = config_from_args(args)
    for name in args.models:
        folder = resolve_model_dir(name)
        import_card(cfg, folder)
        print(f"imported {folder.name} into {tracking_uri(cfg)}")
    return 0


def add_command(sub, common) -> None:
    """Register ``tracking`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("tracking", parents=[common], help="MLflow: log models trained without it from their cards",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
