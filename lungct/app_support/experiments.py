"""Read-only MLflow queries for the Experiments page.

The store is never created by reading: a missing SQLite file or folder means
"no runs yet" (``MlflowClient`` on a fresh sqlite URI would create the file).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

TRAIN_COMMAND = "python -m lungct lab train --name student_kd"


def import_shipped_runs(cfg: dict, folder: str | Path | None = None) -> list[str]:
    """Log the shipped models' training runs into the store from their cards; their names.

    So that a fresh clone's Experiments page is not empty: the shipped models
    were trained elsewhere, and each card keeps its config and per-epoch
    history. Runs are tagged ``imported_from_card``; the weights stay in the
    models folder (not copied into the store). Cards without a history are skipped.
    """
    from lungct.config import models_dir
    from lungct.models.checkpoint import list_shipped, read_card
    from lungct.training.tracking import import_card, tracking_uri
    folder = Path(folder) if folder else models_dir(cfg)
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    imported = []
    for name in list_shipped(folder):
        if (read_card(folder / name).get("training") or {}).get("history"):
            import_card(cfg, folder / name, with_model=False)
            imported.append(name)
    return imported


def store_exists(uri: str) -> bool:
    """Whether a local store is there; remote stores are assumed to exist."""
    if uri.startswith("sqlite:"):
        # sqlite:////abs/path.db or sqlite:///relative.db; in-memory stores have no runs
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        return bool(path) and Path(path).is_file()
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path)).is_dir()
    if "://" not in uri:
        return Path(uri).exists()
    return True


def client(uri: str):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def list_runs(mlflow_client, experiment: str, max_results: int = 500) -> pd.DataFrame:
    """One row per run: ids, name, ``model_name`` tag, status, start, latest metrics, params.

    Metric columns are ``metric:<key>``, parameter columns ``param:<key>``.
    """
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    runs = mlflow_client.search_runs([exp.experiment_id], max_results=max_results,
                                     order_by=["attributes.start_time DESC"])
    rows = []
    for r in runs:
        start = r.info.start_time
        end = r.info.end_time
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name,
               "model_name": r.data.tags.get("model_name", r.info.run_name),
               "status": r.info.status,
               "start": (dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc)
                         .strftime("%Y-%m-%d %H:%M") if start else None),
               "minutes": round((end - start) / 60000, 1) if start and end else None}
        row.update({f"metric:{k}": v for k, v in r.data.metrics.items()})
        row.update({f"param:{k}": v for k, v in r.data.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def filter_runs(runs: pd.DataFrame, model_names: list[str] | None) -> pd.DataFrame:
    if runs.empty or not model_names:
        return runs
    return runs[runs["model_name"].isin(model_names)]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    return sorted(c for c in runs.columns if c.startswith("metric:"))


def curve_metrics(runs: pd.DataFrame) -> list[str]:
    """Per-epoch metric keys (the ``final_*`` summaries have no curve)."""
    keys = [c.split(":", 1)[1] for c in metric_columns(runs)]
    keys = [k for k in keys if not k.startswith("final_")]
    preferred = [k for k in ("val_loss", "train_loss", "val_acc", "val_bal_acc", "train_acc")
                 if k in keys]
    return preferred + sorted(k for k in keys if k not in preferred)


def differing_params(runs: pd.DataFrame) -> list[str]:
    """Parameter columns whose value is not the same in every run shown."""
    cols = [c for c in runs.columns if c.startswith("param:")]
    return sorted(c for c in cols if runs[c].astype(str).nunique(dropna=False) > 1)


def compare_table(runs: pd.DataFrame, all_params: bool = False) -> pd.DataFrame:
    """Runs side by side: identity, metrics, and the parameters that differ (or all)."""
    if runs.empty:
        return runs
    base = ["run_name", "model_name", "status", "start", "minutes"]
    params = (sorted(c for c in runs.columns if c.startswith("param:")) if all_params
              else differing_params(runs))
    return runs[base + metric_columns(runs) + params].reset_index(drop=True)


def metric_history(mlflow_client, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Long table run_name/model_name/step/value of ``key`` for every run in ``runs``."""
    rows = []
    for _, run in runs.iterrows():
        for m in mlflow_client.get_metric_history(run["run_id"], key):
            rows.append({"run": f"{run['run_name']} ({run['run_id'][:6]})",
                         "model_name": run["model_name"], "step": m.step, "value": m.value})
    return pd.DataFrame(rows, columns=["run", "model_name", "step", "value"])
