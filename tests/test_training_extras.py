"""Tests for weight averaging (EMA), JPEG re-compression augmentation, float16 storage
with its validation check, the hybrid ViT's ``stages`` option and importing a card
into MLflow."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lungct.models import create_model, load_model, save_model
from lungct.models.half import rounding_check, store_half
from lungct.training import loop
from lungct.training.datasets import SliceDataset, balanced_sampler, train_transform
from lungct.training.loop import fit, make_ema

from tiny_net import HALF, TinyNet

CPU = torch.device("cpu")


def tiny_loaders(size: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, size, size), generator=g, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2] * 4)
    train = DataLoader(SliceDataset(x, y, HALF, HALF), batch_size=4,
                       sampler=balanced_sampler(y, seed=0))
    val = DataLoader(SliceDataset(x[:6], y[:6], HALF, HALF), batch_size=6)
    return train, val


# -------------------------------------------------------------------- EMA

@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_make_ema_rejects_decay_outside_open_interval(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        make_ema(TinyNet(), decay)


def test_ema_follows_the_weights_slowly():
    model = TinyNet()
    ema = make_ema(model, 0.9)
    start = model.fc.weight.detach().clone()
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update_parameters(model)
    # first update copies, later ones move a tenth of the way
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.fc.weight, start + 1.0 + 0.1, atol=1e-6)


def test_fit_with_ema_validates_and_returns_the_averaged_weights(monkeypatch):
    torch.manual_seed(0)
    model = TinyNet()
    train, val = tiny_loaders()
    seen = []

    def fake_validate(m, loader, device):
        seen.append((m, m.fc.weight.detach().clone()))
        return {"val_loss": 1.0 / len(seen), "val_acc": 0.5}

    monkeypatch.setattr(loop, "validate", fake_validate)
    cfg = {"lr": 1e-2, "weight_decay": 0.0, "epochs": 2, "early_stopping_patience": 3,
           "ema_decay": 0.5}
    trained, history = fit(model, train, val, cfg, device=CPU)
    assert len(history) == 2
    assert all(m is not model for m, _ in seen)            # the average was validated
    assert torch.equal(trained.fc.weight, seen[-1][1])      # and its best state kept
    assert trained is model                                 # in the caller's module


# ------------------------------------------------------------ JPEG augment

def test_jpeg_augmentation_is_added_and_changes_pixels():
    t = train_transform({"hflip": False, "rotation_deg": 0, "zoom": 0, "shift": 0,
                         "jpeg_quality": [10, 10], "jpeg_p": 1.0})
    assert any(isinstance(s, v2.RandomApply) for s in t.transforms)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 64, 64), generator=g, dtype=torch.uint8)
    out = t(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)


@pytest.mark.parametrize("aug", [{"jpeg_quality": [40, 95], "jpeg_p": 0},
                                 {"jpeg_quality": None}])
def test_jpeg_augmentation_off(aug):
    t = train_transform({"hflip": False, "rotation_deg": 0, "zoom": 0, "shift": 0, **aug})
    assert isinstance(t, v2.Identity)


@pytest.mark.parametrize("quality", [[0, 50], [90, 40], [50, 101]])
def test_jpeg_augmentation_rejects_bad_quality(quality):
    with pytest.raises(ValueError, match="jpeg_quality"):
        train_transform({"jpeg_quality": quality, "jpeg_p": 0.5})


# ----------------------------------------------------------- float16 store

@pytest.fixture
def saved_student(tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=32)
    folder = save_model(model, tmp_path / "m", {"name": "m", "protocol": "grouped"})
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return folder, x


def test_rounding_check_counts_nothing_for_an_exact_copy(saved_student):
    folder, x = saved_student
    check = rounding_check(load_model(folder), x)
    assert check["images"] == 8 and check["label_changes"] == 0
    assert 0.0 <= check["max_prob_diff"] < 0.05


def test_store_half_writes_float16_and_records_the_check(saved_student):
    folder, x = saved_student
    before = load_model(folder)
    check = store_half(folder, x, "grouped val", tol=0.05)
    assert check["stored"]
    tensors = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    card = json.loads((folder / "card.json").read_text())
    assert card["storage"]["dtype"] == "float16"
    assert card["storage"]["check"]["split"] == "grouped val"
    assert card["name"] == "m" and card["protocol"] == "grouped"   # rest of the card kept
    after = load_model(folder)                                    # computes in float32
    assert next(after.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(before(x).argmax(1), after(x).argmax(1))


def test_store_half_keeps_float32_when_the_check_fails(saved_student):
    folder, x = saved_student
    check = store_half(folder, x, "grouped val", tol=-1.0)    # nothing can pass
    assert not check["stored"]
    tensors = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float32}
    assert json.loads((folder / "card.json").read_text())["storage"]["dtype"] == "float32"


# -------------------------------------------------------- hybrid stages

@pytest.mark.parametrize("stages,grid", [(5, 4), (6, 2), (7, 2)])
def test_hybrid_vit_stages_set_the_token_grid(stages, grid, tmp_path):
    model = create_model("hybrid_vit_lite0", pretrained=False, input_size=64, stages=stages,
                         depth=2)
    assert tuple(model.patch_embed.grid_size) == (grid, grid)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    folder = save_model(model, tmp_path / "h")
    again = load_model(folder)                                  # rebuilt from arch_kwargs
    assert again.card["arch_kwargs"] == {"stages": stages, "depth": 2}
    assert tuple(again.patch_embed.grid_size) == (grid, grid)


@pytest.mark.parametrize("kw,match", [({"stages": 0}, "stages"), ({"stages": 8}, "stages"),
                                      ({"depth": 1}, "depth")])
def test_hybrid_vit_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("hybrid_vit_lite0", pretrained=False, input_size=64, **kw)


# -------------------------------------------------------- MLflow import

def test_import_card_logs_history_and_model(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from lungct.training.tracking import import_card
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "gpu_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.5},
               {"epoch": 2, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.7}]
    card = {"name": "gpu_model", "protocol": "grouped", "created": "2026-11-26T00:00:00+00:00",
            "training": {"config": {"lr": 0.001}, "device": "cuda:0", "history": history},
            "val_metrics": {"accuracy": 0.7, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 1]]}}
    (folder / "card.json").write_text(json.dumps(card))
    import_card({"tracking": {"mlflow_uri": uri, "experiment": "t"}}, folder)
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["imported_from_card"] == "true"
    assert run.data.tags["trained_on"] == "cuda:0"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0.9, 0.6]
    assert run.data.metrics["final_val_accuracy"] == 0.7
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "confusion_matrix.png"} <= names


def test_import_card_refuses_a_card_without_history(tmp_path):
    from lungct.training.tracking import import_card
    (tmp_path / "card.json").write_text(json.dumps({"name": "x", "training": {}}))
    with pytest.raises(ValueError, match="no training history"):
        import_card({}, tmp_path)


# ------------------------------------------------------- card markdown

def test_card_markdown_shows_recipe_selection_and_storage():
    from lungct.lab.model_card_md import render
    card = {"name": "m", "arch": "efficientnet_lite0", "input_size": 320, "protocol": "grouped",
            "training": {"history": [{"epoch": 1, "best_epoch": 1}], "device": "cuda:0",
                         "minutes": 1.0, "data": {"n_train": 702, "n_val": 176},
                         "config": {"lr": 3e-4, "batch_size": 32, "freeze_bn": True,
                                    "ema_decay": 0.98, "monitor": "val_loss",
                                    "augment": {"jpeg_quality": [40, 95], "jpeg_p": 0.5}},
                         "selection": {"rule": "lowest val loss",
                                       "candidates_val_loss": {"a": 0.4, "b": 0.3},
                                       "chosen": "b"}},
            "storage": {"dtype": "float16", "check": {"images": 176, "split": "grouped val",
                                                      "label_changes": 0,
                                                      "max_prob_diff": 0.003}}}
    md = render(card)
    assert "frozen BatchNorm statistics, weight EMA 0.98, JPEG re-compression" in md
    assert "- Selection: lowest val loss" in md and "a 0.4; b 0.3" in md and "chosen: b" in md
    assert "Stored in float16" in md and "0 label changes" in md
    assert "Not evaluated on a test split yet" in md


def test_store_half_twice_keeps_the_first_check(saved_student):
    folder, x = saved_student
    first = store_half(folder, x, "grouped val", tol=0.05)
    again = store_half(folder, x[:2], "other", tol=0.05)
    assert again == first
    assert json.loads((folder / "card.json").read_text())["storage"]["check"]["images"] == 8
