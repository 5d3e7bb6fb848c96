"""Tests for lungct.training (distillation loss, sampler, augmentation, loop, teacher
adapter), lungct.config, and an end-to-end smoke run on the real dataset when present."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lungct import CLASSES
from lungct.config import (REPO_ROOT, apply_overrides, load_config, model_config, params_path,
                           resolve)
from lungct.models import create_model
from lungct.preprocess import IMAGENET_MEAN, IMAGENET_STD
from lungct.training import loop
from lungct.training.datasets import SliceDataset, balanced_sampler, train_transform
from lungct.training.distill import kd_loss
from lungct.training.loop import fit
from lungct.training.run import TeacherAdapter

from tiny_net import HALF, TinyNet

CPU = torch.device("cpu")


@pytest.fixture
def clean_env(monkeypatch):
    from lungct.config import ENV_OVERRIDES
    for name in (*ENV_OVERRIDES, "LUNGCT_PARAMS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- kd_loss

def _logits(seed: int, n: int = 6, k: int = 3, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * scale


def test_kd_loss_alpha_one_is_cross_entropy():
    s, t, y = _logits(0), _logits(1), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(kd_loss(s, t, y, alpha=1.0), F.cross_entropy(s, y))


@pytest.mark.parametrize("alpha,temperature", [(0.5, 4.0), (0.0, 2.0), (0.3, 1.0)])
def test_kd_loss_matches_hand_formula(alpha, temperature):
    s, t, y = _logits(2), _logits(3), torch.tensor([2, 1, 0, 0, 1, 2])
    ce = -torch.log(torch.softmax(s, 1)[torch.arange(6), y]).mean()
    p_t = torch.softmax(t / temperature, 1)
    log_p_s = torch.log(torch.softmax(s / temperature, 1))
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()       # KL(p_t || p_s), per sample
    expected = alpha * ce + (1 - alpha) * temperature ** 2 * kl
    assert torch.allclose(kd_loss(s, t, y, alpha, temperature), expected, atol=1e-5)


def test_kd_loss_soft_part_vanishes_for_equal_logits():
    s, y = _logits(4), torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.allclose(kd_loss(s, s.clone(), y, alpha=0.0), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(kd_loss(s, s.clone(), y, alpha=0.25),
                          0.25 * F.cross_entropy(s, y), atol=1e-6)


@pytest.mark.parametrize("kw", [{"alpha": -0.1}, {"alpha": 1.5}, {"temperature": 0.0},
                                {"temperature": -1.0}])
def test_kd_loss_rejects_bad_parameters(kw):
    s, y = _logits(5), torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError):
        kd_loss(s, s, y, **kw)


def test_kd_loss_gradient_reaches_student_not_teacher():
    s = _logits(6).requires_grad_()
    t = _logits(7).requires_grad_()
    kd_loss(s, t, torch.tensor([0, 1, 2, 2, 1, 0]), alpha=0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


# ------------------------------------------------------ sampler, transforms

def test_balanced_sampler_draws_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 10 + [2] * 50)
    sampler = balanced_sampler(labels, num_samples=3000, seed=0)
    drawn = Counter(labels[i].item() for i in sampler)
    assert sum(drawn.values()) == 3000
    for k in range(3):
        assert abs(drawn[k] / 3000 - 1 / 3) < 0.05, drawn
    assert list(balanced_sampler(labels, 50, seed=3)) == list(balanced_sampler(labels, 50, seed=3))
    assert len(balanced_sampler(labels)) == len(labels)


def test_train_transform_respects_params():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    flip_only = train_transform({"hflip": True, "rotation_deg": 0, "zoom": 0, "shift": 0})
    outs = {tuple(flip_only(x).flatten().tolist()) for _ in range(40)}
    assert outs == {tuple(x.flatten().tolist()), tuple(x.flip(-1).flatten().tolist())}
    full = train_transform({"hflip": True, "rotation_deg": 15, "zoom": 0.1, "shift": 0.1})
    assert full(x).shape == x.shape and full(x).dtype == torch.uint8


def test_train_transform_all_off_is_identity():
    x = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    t = train_transform({"hflip": False, "rotation_deg": 0, "zoom": 0, "shift": 0})
    assert torch.equal(t(x), x)


def test_slice_dataset_normalises():
    images = torch.full((2, 8, 8), 255, dtype=torch.uint8)
    images[1] = 0
    ds = SliceDataset(images, torch.tensor([2, 0]), HALF, HALF)
    x, y, mass = ds[0]
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.ones_like(x))
    assert y.item() == 2 and mass.shape == (8, 8) and mass.sum() == 0
    assert torch.allclose(ds[1][0], -torch.ones(3, 8, 8))


# -------------------------------------------------------------------- fit

def brightness_data(n_per_class: int, size: int, seed: int):
    """uint8 slices whose class is their brightness (easy to learn)."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k in range(3):
        base = 40 + 80 * k
        noise = torch.randint(-20, 21, (n_per_class, size, size), generator=g)
        images.append((base + noise).clamp(0, 255).to(torch.uint8))
        labels += [k] * n_per_class
    return torch.cat(images), torch.tensor(labels)


def loaders_for(model, size: int, batch_size: int = 6):
    x, y = brightness_data(4, size, seed=0)
    vx, vy = brightness_data(2, size, seed=1)
    train = DataLoader(SliceDataset(x, y, model.mean, model.std), batch_size=batch_size,
                       sampler=balanced_sampler(y, seed=0))
    val = DataLoader(SliceDataset(vx, vy, model.mean, model.std), batch_size=16)
    return train, val


TRAIN_CFG = {"lr": 1e-3, "weight_decay": 1e-4, "epochs": 2, "early_stopping_patience": 3,
             "monitor": "val_loss"}


def test_fit_efficientnet_two_epochs():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=32)
    train, val = loaders_for(model, 32)
    trained, history = fit(model, train, val, TRAIN_CFG, device=CPU)
    assert len(history) == 2
    for k, h in enumerate(history, start=1):
        assert {"train_loss", "val_loss", "val_acc", "epoch"} <= set(h)
        assert h["epoch"] == k
        assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
        assert 0.0 <= h["val_acc"] <= 1.0
    assert not trained.training


def scripted_validation(monkeypatch, losses: list[float]):
    """Replace validate() by a script of val losses; record the weights it saw."""
    seen = []

    def fake_validate(model, loader, device):
        seen.append(model.fc.weight.detach().clone())
        return {"val_loss": losses[len(seen) - 1], "val_acc": 0.5}

    monkeypatch.setattr(loop, "validate", fake_validate)
    return seen


def test_fit_early_stopping_restores_best_weights(monkeypatch):
    torch.manual_seed(0)
    model = TinyNet()
    train, val = loaders_for(model, 8)
    seen = scripted_validation(monkeypatch, [1.0, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1])
    cfg = {**TRAIN_CFG, "epochs": 8, "early_stopping_patience": 2}
    trained, history = fit(model, train, val, cfg, device=CPU)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]    # 2 epochs without improvement
    assert history[-1]["best_epoch"] == 2
    assert torch.equal(trained.fc.weight, seen[1])         # weights of the best epoch
    assert not torch.equal(seen[1], seen[3])


def test_fit_monitor_val_acc(monkeypatch):
    torch.manual_seed(0)
    model = TinyNet()
    train, val = loaders_for(model, 8)
    accs = iter([0.5, 0.6, 0.55, 0.58, 0.7])

    def fake_validate(model, loader, device):
        return {"val_loss": 1.0, "val_acc": next(accs)}

    monkeypatch.setattr(loop, "validate", fake_validate)
    cfg = {**TRAIN_CFG, "epochs": 5, "early_stopping_patience": 2, "monitor": "val_acc"}
    _, history = fit(model, train, val, cfg, device=CPU)
    assert len(history) == 4 and history[-1]["best_epoch"] == 2


def test_fit_patience_zero_continues_while_improving(monkeypatch):
    torch.manual_seed(0)
    model = TinyNet()
    train, val = loaders_for(model, 8)
    scripted_validation(monkeypatch, [1.0, 0.9, 0.8])
    _, history = fit(model, train, val, {**TRAIN_CFG, "epochs": 3,
                                         "early_stopping_patience": 0}, device=CPU)
    assert len(history) == 3


def test_fit_with_teacher_uses_distillation(monkeypatch):
    torch.manual_seed(0)
    student, teacher = TinyNet(), TinyNet()
    train, val = loaders_for(student, 8)
    calls = []
    real = loop.kd_loss

    def spy(*args, **kwargs):
        calls.append(args[3:])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "kd_loss", spy)
    before = teacher.fc.weight.detach().clone()
    cfg = {**TRAIN_CFG, "epochs": 1, "alpha": 0.3, "temperature": 2.0}
    fit(student, train, val, cfg, teacher=teacher, device=CPU)
    assert calls and all(c == (0.3, 2.0) for c in calls)
    assert torch.equal(teacher.fc.weight, before)           # the teacher never trains
    assert not any(p.requires_grad for p in teacher.parameters())


# ---------------------------------------------------------- TeacherAdapter

class EchoTeacher(nn.Module):
    """Returns what it was fed, so the adapter's resize and normalisation show."""

    input_size = 64
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def forward(self, x):
        self.seen = x
        return x.mean(dim=(2, 3))


def test_teacher_adapter_resizes_and_renormalises():
    student = SimpleNamespace(mean=HALF, std=HALF)
    teacher = EchoTeacher()
    adapter = TeacherAdapter(teacher, student)
    v = 0.3
    x = torch.full((2, 3, 32, 32), (v - 0.5) / 0.5)   # a uniform grey v, student-normalised
    adapter(x)
    assert teacher.seen.shape == (2, 3, 64, 64)
    for c in range(3):
        expected = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(teacher.seen[:, c], torch.full((2, 64, 64), expected), atol=1e-5)


def test_teacher_adapter_with_real_models():
    torch.manual_seed(0)
    teacher = create_model("hybrid_vit_lite0", pretrained=False, input_size=64).eval()
    student = create_model("efficientnet_lite0", pretrained=False, input_size=32)
    adapter = TeacherAdapter(teacher, student)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = adapter(x)
        direct = teacher(F.interpolate(x * 0.5 + 0.5, size=(64, 64), mode="bilinear",
                                       align_corners=False).sub(0.5).div(0.5))
    assert out.shape == (2, 3)
    assert torch.allclose(out, direct, atol=1e-5)


# ------------------------------------------------------------------ config

def test_load_config_defaults(clean_env):
    cfg = load_config()
    assert "presets" not in cfg
    assert cfg["data"]["root"] == "data/raw/iq-othnccd"
    assert cfg["train"]["protocol"] == "grouped"
    assert params_path() == REPO_ROOT / "params.yaml"


def test_load_config_presets(clean_env):
    base = load_config()
    smoke = load_config(preset="smoke")
    assert smoke["preprocess"]["image_size"] == 64
    assert smoke["train"]["epochs"] == 1 and smoke["train"]["pretrained"] is False
    assert smoke["train"]["lr"] == base["train"]["lr"]         # untouched keys survive
    assert smoke["preprocess"]["dicom_window"] == base["preprocess"]["dicom_window"]
    assert load_config(preset="paper")["train"]["protocol"] == "paper"
    with pytest.raises(ValueError, match="smoke"):
        load_config(preset="nope")


def test_load_config_overrides(clean_env):
    cfg = load_config(preset="smoke", overrides=["train.epochs=3", "train.model=vgg16",
                                                  "train.amp=false", "new.section.key=1.5"])
    assert cfg["train"]["epochs"] == 3
    assert cfg["train"]["model"] == "vgg16"
    assert cfg["train"]["amp"] is False
    assert cfg["new"]["section"]["key"] == 1.5
    assert cfg["preprocess"]["image_size"] == 64      # the preset still applies
    base = {"train": {"epochs": 8}}
    assert apply_overrides(base, ["train.epochs=2"]) == {"train": {"epochs": 2}}
    assert base == {"train": {"epochs": 8}}           # input not mutated


@pytest.mark.parametrize("bad", ["train.epochs", "no_equals_sign", "train.epochs.deeper=1"])
def test_bad_override_raises(bad, clean_env):
    with pytest.raises(ValueError, match="override"):
        load_config(overrides=[bad])


def test_override_scientific_notation_is_a_float(clean_env):
    assert load_config(overrides=["train.lr=1e-3"])["train"]["lr"] == pytest.approx(1e-3)


def test_environment_wins(clean_env, tmp_path):
    clean_env.setenv("LUNGCT_DATA", str(tmp_path / "data"))
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    cfg = load_config(overrides=["data.root=elsewhere"])
    assert cfg["data"]["root"] == str(tmp_path / "data")
    assert cfg["tracking"]["mlflow_uri"] == "sqlite:///x.db"
    params = tmp_path / "p.yaml"
    params.write_text("data: {root: r, seed: 1}\npresets: {tiny: {data: {seed: 2}}}\n")
    clean_env.setenv("LUNGCT_PARAMS", str(params))
    clean_env.delenv("LUNGCT_DATA")
    assert load_config() == {"data": {"root": "r", "seed": 1},
                             "tracking": {"mlflow_uri": "sqlite:///x.db"}}
    assert load_config(preset="tiny")["data"]["seed"] == 2


def test_resolve():
    assert resolve("data/splits.csv") == REPO_ROOT / "data" / "splits.csv"
    assert resolve("/abs/x") == Path("/abs/x")


def test_model_config_merges_an_entry(clean_env):
    cfg = load_config()
    merged, teacher, description = model_config(cfg, "student_kd")
    assert teacher == "teacher_hybrid_vit"
    assert description
    assert merged["train"]["model"] == "efficientnet_lite0"
    assert merged["train"]["batch_size"] == cfg["train"]["batch_size"]
    scratch, teacher, _ = model_config(cfg, "vgg16_scratch")
    assert teacher is None
    assert scratch["preprocess"]["image_size"] == 64
    assert scratch["train"]["model"] == "vgg16_bn" and scratch["train"]["pretrained"] is False
    assert cfg["preprocess"]["image_size"] == 224          # input not mutated
    plain, teacher, description = model_config(cfg, "not_a_shipped_model")
    assert plain == cfg and teacher is None and description == ""


@pytest.fixture
def captured_train(monkeypatch):
    """Run `lungct lab train` through the CLI without training: capture what it would do."""
    import lungct.training.run as run
    calls = []

    def fake(cfg, name, out_dir=None, **kwargs):
        calls.append(SimpleNamespace(cfg=cfg, name=name, out_dir=out_dir, **kwargs))
        return out_dir

    monkeypatch.setattr(run, "train_from_config", fake)
    return calls


def test_cli_train_set_overrides_win_over_the_model_entry(captured_train, clean_env):
    from lungct.cli import main
    assert main(["lab", "train", "--name", "student_kd", "--set", "train.epochs=2"]) == 0
    call = captured_train[0]
    assert call.cfg["train"]["epochs"] == 2
    assert call.teacher == str(resolve("models") / "teacher_hybrid_vit")
    assert call.description and call.track is True


@pytest.mark.parametrize("name", ["teacher_hybrid_vit", "student_kd"])
def test_cli_train_smoke_preset_keeps_smoke_runs_short(name, captured_train, clean_env):
    """training/smoke_pipeline.sh trains these with --preset smoke: one epoch at 64 px."""
    from lungct.cli import main
    assert main(["lab", "train", "--name", name, "--preset", "smoke"]) == 0
    cfg = captured_train[0].cfg
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["pretrained"] is False
    assert cfg["preprocess"]["image_size"] == 64


# ------------------------------------------------------- end-to-end smoke

@pytest.fixture(scope="module")
def real_root() -> Path:
    root = resolve(load_config()["data"]["root"])
    if not root.exists():
        pytest.skip(f"IQ-OTH/NCCD dataset not found at {root}: set LUNGCT_DATA or unpack it "
                    "to data/raw/iq-othnccd to run the end-to-end smoke test")
    return root


def small_manifest(path: Path, per_part_and_class: int = 4) -> Path:
    """The committed manifest cut to a few images of each class in each grouped part."""
    from lungct.data.splits import read_manifest, write_manifest
    rows = read_manifest(resolve(load_config()["data"]["manifest"]))
    keep, count = [], Counter()
    for r in rows:
        key = (r["grouped_split"], r["label"])
        if count[key] < per_part_and_class:
            count[key] += 1
            keep.append(r)
    write_manifest(keep, path)
    return path


def test_end_to_end_smoke(real_root, tmp_path, capsys):
    from lungct.cli import main
    from lungct.training.evaluate import evaluate
    from lungct.training.run import train_from_config

    reports = tmp_path / "reports"
    common = ["--preset", "smoke", "--limit", "3", "--no-mlflow",
              "--set", f"reports.dir={reports}"]
    teacher = tmp_path / "t"
    assert main(["lab", "train", "--name", "t", "--out", str(teacher),
                 "--set", "train.model=hybrid_vit_lite0", *common]) == 0
    t_card = json.loads((teacher / "card.json").read_text())
    assert t_card["arch"] == "hybrid_vit_lite0" and t_card["protocol"] == "grouped"
    assert t_card["input_size"] == 64
    # saved outside the models folder: its learning curve stays beside it, and the
    # reports folder's curves (the shipped models', DVC plots) are left alone
    assert (teacher / "history.csv").exists() and not (reports / "history" / "t.csv").exists()

    student = tmp_path / "s"
    assert main(["lab", "train", "--name", "s", "--out", str(student), "--teacher", str(teacher),
                 *common]) == 0
    s_card = json.loads((student / "card.json").read_text())
    assert s_card["arch"] == "efficientnet_lite0"
    assert s_card["teacher"]["name"] == "t" and s_card["teacher"]["arch"] == "hybrid_vit_lite0"
    assert s_card["training"]["config"]["alpha"] == load_config()["distill"]["alpha"]
    # fine-tuning a saved model starts from its weights, and says so in the card
    tuned = tmp_path / "s3"
    assert main(["lab", "train", "--name", "s3", "--out", str(tuned), "--set",
                 f"train.init_from={student}", *common]) == 0
    assert json.loads((tuned / "card.json").read_text())["pretrained"] == \
        f"fine-tuned from {student}"
    with pytest.raises(ValueError, match="cannot start"):
        train_from_config(load_config(preset="smoke", overrides=[
            f"train.init_from={student}", "train.model=hybrid_vit_lite0"]),
            "s4", tmp_path / "s4", limit=3, track=False)
    capsys.readouterr()

    cfg = load_config(preset="smoke", overrides=[
        f"reports.dir={reports}", f"data.manifest={small_manifest(tmp_path / 'm.csv')}"])
    card = evaluate(student, cfg, write=True, n_boot=50)
    assert "test_metrics" in card and 0.0 <= card["test_metrics"]["accuracy"] <= 1.0
    assert card["calibration"]["temperature"] > 0
    assert card["evaluated_on"]["protocol"] == "grouped"
    assert json.loads((student / "card.json").read_text())["test_metrics"]
    assert (student / "test_predictions.json").exists()
    assert (reports / "metrics" / "s.json").exists()
    assert not (REPO_ROOT / "reports" / "metrics" / "s.json").exists()

    with pytest.raises(ValueError, match="grouped"):
        evaluate(student, cfg, protocol="paper", write=False, stats=False)

    t_card["protocol"] = "paper"
    (teacher / "card.json").write_text(json.dumps(t_card))
    with pytest.raises(ValueError, match="protocols never mix"):
        train_from_config(cfg, "s2", tmp_path / "s2", teacher=str(teacher), limit=3,
                          track=False)
    assert not (tmp_path / "s2").exists()
