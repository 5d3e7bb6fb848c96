"""Train (or distill) one model from the config and save it with its card.

This is what ``python -m lungct lab train``, ``training/train.py``, the DVC stages
and the CI smoke run all call. Only the train and val parts of the chosen
protocol are read here; test images stay untouched until ``evaluate``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lungct import CLASSES, __version__
from lungct.config import models_dir, reports_dir, resolve
from lungct.data.splits import read_manifest, select
from lungct.training.metrics import classification_report
from lungct.models import create_model, load_model, save_model
from lungct.training.datasets import (LungWindowRerender, SliceDataset, balanced_sampler,
                                     preload, preload_lung_masks, preload_raw,
                                     train_transform)
from lungct.training.lesions import LesionPainter
from lungct.training.loop import (fit, is_distributed, pick_device, predict_logits,
                                  seed_everything, setup_distributed, _RankShard)
from lungct.training.tracking import mlflow_run

DATASET_CREDIT = ("IQ-OTH/NCCD lung cancer dataset: H. F. Al-Yasriy, M. S. Al-Huseiny, "
                  "Mendeley Data 2021, doi 10.17632/bhmdr45bh2, CC BY 4.0")


class TeacherAdapter(nn.Module):
    """Feed a teacher the student's batch at the teacher's own size and normalisation."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        self.teacher, self.size = teacher, teacher.input_size
        self.register_buffer("s_mean", torch.tensor(student.mean).view(1, 3, 1, 1))
        self.register_buffer("s_std", torch.tensor(student.std).view(1, 3, 1, 1))
        self.register_buffer("t_mean", torch.tensor(teacher.mean).view(1, 3, 1, 1))
        self.register_buffer("t_std", torch.tensor(teacher.std).view(1, 3, 1, 1))

    def forward(self, x):
        x = x * self.s_std + self.s_mean
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.teacher((x - self.t_mean) / self.t_std)


def write_history(history: list[dict], path: Path) -> None:
    """Per-epoch metrics as CSV: DVC's plots read it (learning curves)."""
    import csv
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def manifest_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def loaders(cfg: dict, model: nn.Module, protocol: str, limit: int | None = None):
    """Train loader (augmented, class-balanced) and val loader for one protocol."""
    manifest = resolve(cfg["data"]["manifest"])
    rows = read_manifest(manifest)
    root = resolve(cfg["data"]["root"])
    parts = {p: select(rows, protocol, p) for p in ("train", "val")}
    if limit:  # smoke runs: a few images of every class
        parts = {p: [r for c in CLASSES for r in [x for x in v if x["label"] == c][:limit]]
                 for p, v in parts.items()}
    tcfg = cfg["train"]
    view = getattr(model, "view", "full")
    images, labels = preload(root, parts["train"], model.input_size, view)
    lung_window_p = float(cfg.get("augment", {}).get("lung_window_p") or 0)
    rerender = (LungWindowRerender(preload_raw(root, parts["train"]), model.input_size,
                                   lung_window_p) if view == "lungs" and lung_window_p else None)
    lesion = cfg.get("augment", {}).get("lesion")
    painter = (LesionPainter(preload_lung_masks(root, parts["train"], model.input_size, view),
                             sources=[CLASSES.index(c) for c in lesion.get("sources",
                                                                           ["normal", "benign"])],
                             target=CLASSES.index("malignant"), p=float(lesion.get("p", 0.25)),
                             diameter=lesion.get("diameter", (0.06, 0.25)),
                             spicule_p=float(lesion.get("spicule_p", 0.5)))
               if lesion else None)
    train_ds = SliceDataset(images, labels, model.mean, model.std,
                            train_transform(cfg.get("augment", {})), rerender, painter)
    sampler = (balanced_sampler(labels, seed=cfg["data"]["seed"])
               if cfg.get("augment", {}).get("oversample", True) else None)
    rank, world = setup_distributed()
    if sampler is None:
        g = torch.Generator().manual_seed(cfg["data"]["seed"])
        sampler = torch.utils.data.RandomSampler(train_ds, generator=g)
    if world > 1:
        sampler = _RankShard(sampler, rank, world)
    train_loader = DataLoader(train_ds, batch_size=tcfg["batch_size"], sampler=sampler,
                              num_workers=tcfg.get("num_workers", 0), drop_last=len(labels) >
                              tcfg["batch_size"])
    v_images, v_labels = preload(root, parts["val"], model.input_size, view)
    val_loader = DataLoader(SliceDataset(v_images, v_labels, model.mean, model.std),
                            batch_size=64)
    info = {"manifest": str(cfg["data"]["manifest"]), "manifest_md5": manifest_md5(manifest),
            "n_train": len(labels), "n_val": len(v_labels),
            "train_class_counts": torch.bincount(labels, minlength=3).tolist()}
    return train_loader, val_loader, info


def train_from_config(cfg: dict, name: str, out_dir: str | Path | None = None,
                      teacher: str | Path | None = None, description: str = "",
                      limit: int | None = None, track: bool = True) -> Path:
    """Train ``cfg['train']['model']`` (distilled from ``teacher`` if given); save to out_dir."""
    tcfg = dict(cfg["train"])
    protocol = tcfg["protocol"]
    seed_everything(int(cfg["data"]["seed"]))
    device = pick_device()
    model = create_model(tcfg["model"], pretrained=bool(tcfg.get("pretrained", False)),
                         input_size=int(cfg["preprocess"]["image_size"]),
                         **tcfg.get("model_kwargs", {}))
    model.view = cfg["preprocess"].get("view", "full")
    init_from = tcfg.get("init_from")
    if init_from:   # fine-tune a shipped model: same architecture, view and input size
        start_model = load_model(init_from)
        if (start_model.card["arch"], getattr(start_model, "view", "full"),
                int(start_model.input_size)) != (tcfg["model"], model.view, model.input_size):
            raise ValueError(f"init_from {init_from}: {start_model.card['arch']} "
                             f"{start_model.input_size} px ({start_model.view} view) cannot "
                             f"start {tcfg['model']} {model.input_size} px ({model.view} view)")
        model.load_state_dict(start_model.state_dict())
        del start_model
    lesion = cfg.get("augment", {}).get("lesion") or {}
    tcfg["localise"] = float(lesion.get("localise") or 0)
    if tcfg["localise"]:
        from lungct.training.localise import supports
        if not supports(model):
            raise ValueError(f"augment.lesion.localise needs a model that ends in pooled "
                             f"features and one linear layer; {tcfg['model']} does not")
        if is_distributed():
            raise ValueError("augment.lesion.localise trains on one process (it reads the "
                             "feature map beside the DDP forward)")
        tcfg["localise_class"] = CLASSES.index("malignant")
    teacher_model, teacher_card = None, None
    if teacher:
        t = load_model(teacher)
        teacher_card = {"name": t.name, "arch": t.card["arch"],
                        "protocol": t.card.get("protocol")}
        if getattr(t, "view", "full") != model.view:
            raise ValueError(f"teacher {t.name} sees the {t.view!r} view, the student "
                             f"{model.view!r}: retrain the teacher with the same preprocessing")
        if t.card.get("protocol") != protocol:
            raise ValueError(f"teacher {t.name} was trained on the {t.card.get('protocol')} "
                             f"protocol, the student on {protocol}: protocols never mix")
        teacher_model = TeacherAdapter(t, model)
        tcfg.update(alpha=cfg["distill"]["alpha"], temperature=cfg["distill"]["temperature"])
    train_loader, val_loader, data_info = loaders(cfg, model, protocol, limit)
    home = models_dir(cfg) / name
    out_dir = Path(out_dir) if out_dir else home
    # the learning curves of a shipped model live in the reports folder (DVC plots); a
    # run saved anywhere else (a sweep, a cross-validation fold, a trial) keeps its own
    # beside its weights and never rewrites the shipped model's
    history_path = (reports_dir(cfg) / "history" / f"{name}.csv"
                    if out_dir.resolve() == home.resolve() else out_dir / "history.csv")
    print(f"{name}: {tcfg['model']} on {device}, protocol {protocol}, "
          f"{data_info['n_train']} train / {data_info['n_val']} val images", flush=True)
    start = time.time()
    with mlflow_run(cfg, name, enabled=track) as run:
        model, history = fit(model, train_loader, val_loader, tcfg, teacher_model,
                             on_epoch=run.log_epoch, device=device)
        logits, y = predict_logits(model, val_loader, device)
        val_report = classification_report(y.numpy(), torch.softmax(logits, 1).numpy(),
                                           n_boot=200)
        if is_distributed() and torch.distributed.get_rank() != 0:
            return out_dir
        card = {
            "name": name, "description": description, "lungct_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "protocol": protocol, "teacher": teacher_card,
            "pretrained": (f"fine-tuned from {init_from}" if init_from else
                           "ImageNet (offline EfficientNet-Lite weights)"
                           if tcfg.get("pretrained") else "none: trained from scratch"),
            "training": {"config": {**tcfg, "augment": cfg.get("augment", {})},
                         "data": data_info, "device": str(device),
                         "minutes": round((time.time() - start) / 60, 1),
                         "history": history},
            "val_metrics": val_report, "dataset": DATASET_CREDIT,
            "intended_use": "research decision support; not a medical device",
        }
        save_model(model.cpu(), out_dir, card)
        write_history(history, history_path)
        run.log_final({f"val_{k}": v for k, v in val_report.items()
                       if isinstance(v, (int, float))})
        run.log_confusion(val_report["confusion_matrix"], f"{name} (val)")
        run.log_model(out_dir)
    return out_dir
