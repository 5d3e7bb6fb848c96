"""First use of the Experiments page: the shipped models' runs imported from their cards."""

from __future__ import annotations

import json

import pytest

from lungct.app_support import experiments as exp


def test_import_shipped_runs_skips_cards_without_history(tmp_path):
    pytest.importorskip("mlflow")
    models = tmp_path / "models"
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.5},
               {"epoch": 2, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.7}]
    for name, card in (("trained", {"name": "trained", "training": {"history": history}}),
                       ("untrained", {"name": "untrained"})):
        (models / name).mkdir(parents=True)
        (models / name / "card.json").write_text(json.dumps(card))
        (models / name / "model.safetensors").write_bytes(b"weights")
    uri = f"sqlite:///{tmp_path / 'new_folder' / 'mlflow.db'}"
    cfg = {"tracking": {"mlflow_uri": uri, "experiment": "lungct_test"}}
    assert not exp.store_exists(uri)
    assert exp.import_shipped_runs(cfg, models) == ["trained"]
    runs = exp.list_runs(exp.client(uri), "lungct_test")
    assert list(runs["model_name"]) == ["trained"]
    assert runs["metric:val_loss"].iloc[0] == pytest.approx(0.6)
    artifacts = tmp_path / "new_folder" / "mlartifacts"
    assert not list(artifacts.rglob("model.safetensors"))   # weights stay in models/
