"""One training loop for every model, with or without a teacher.

``train_one_epoch`` and ``validate`` return metric dicts (as in timm's
train.py); ``fit`` runs them with early stopping and keeps the best weights in
memory. CUDA with mixed precision is used when present, the CPU otherwise;
under ``torchrun`` with several GPUs the model is wrapped in PyTorch DDP and
each rank takes its share of the sampled indices.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from lungct.training.distill import kd_loss
from lungct.training.localise import class_map, localisation_loss


def pick_device() -> torch.device:
    """CUDA (this rank's GPU under torchrun) when available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_distributed() -> tuple[int, int]:
    """Initialise the process group under torchrun; returns (rank, world size)."""
    if not is_distributed():
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


class _RankShard(torch.utils.data.Sampler):
    """Every rank draws the same oversampled epoch, then keeps its own stride of it."""

    def __init__(self, sampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        return iter(list(self.sampler)[self.rank::self.world])

    def __len__(self):
        return math.ceil(len(self.sampler) / self.world)


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm layers in eval mode: use, and never update, their running stats.

    Fine-tuning the ImageNet EfficientNet-Lite on ~700 slices, the running
    variances of near-dead channels drift to ~0 and validation accuracy swung
    by 30 points between epochs at a learning rate near zero; frozen
    statistics remove that instability (weights and BN affine parameters
    still train).
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_one_epoch(model, loader, optimizer, device, scaler=None, teacher=None,
                    alpha: float = 0.5, temperature: float = 4.0, scheduler=None,
                    label_smoothing: float = 0.0, desc: str = "train",
                    freeze_bn: bool = False, ema=None, localise: float = 0.0,
                    target_class: int | None = None) -> dict:
    """One pass over ``loader``; with a teacher the loss is the distillation loss.

    ``ema`` (an ``AveragedModel``) is updated after every optimizer step.
    Slices with a painted mass (a non-empty third item of the batch) learn their
    new label by cross-entropy, never from the teacher, which cannot know that the
    mass makes them ``target_class``; with ``localise`` > 0 they add that weight times
    the localisation loss of ``target_class``'s map (``lungct.training.localise``).
    """
    model.train()
    if freeze_bn:
        freeze_batchnorm(model)
    use_amp = scaler is not None
    net = model.module if hasattr(model, "module") else model
    total, correct, loss_sum, loc_sum, loc_n = 0, 0, 0.0, 0.0, 0
    for x, y, mass in tqdm(loader, desc=desc, leave=False, mininterval=5):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        painted = (mass.flatten(1).amax(1) > 0).to(device)
        with torch.autocast(device.type, enabled=use_amp):
            if localise:
                features = net.forward_features(x)
                logits = net.forward_head(features)
            else:
                logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                plain = ~painted
                loss = logits.new_zeros(())
                if plain.any():
                    loss = loss + kd_loss(logits[plain].float(), t_logits[plain].float(),
                                          y[plain], alpha, temperature) * plain.sum() / len(y)
                if painted.any():
                    loss = loss + F.cross_entropy(logits[painted].float(), y[painted],
                                                  reduction="sum") / len(y)
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            if localise and painted.any():
                loc = localisation_loss(class_map(net, features[painted], int(target_class)),
                                        mass[painted.cpu()].to(device))
                loss = loss + localise * loc
                loc_sum, loc_n = loc_sum + loc.item() * int(painted.sum()), \
                    loc_n + int(painted.sum())
        optimizer.zero_grad(set_to_none=True)
        if use_amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        total += len(y)
        correct += (logits.argmax(1) == y).sum().item()
        loss_sum += loss.item() * len(y)
    out = {"train_loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1)}
    if loc_n:
        out["train_loc_loss"] = loc_sum / loc_n
    return out


@torch.no_grad()
def predict_logits(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every sample of ``loader`` (in loader order)."""
    model.eval()
    outs, ys = [], []
    for x, y, _ in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            outs.append(model(x.to(device)).float().cpu())
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def validate(model, loader, device) -> dict:
    """Loss, accuracy and per-class recall on a held-out loader."""
    logits, y = predict_logits(model, loader, device)
    pred = logits.argmax(1)
    out = {"val_loss": F.cross_entropy(logits, y).item(),
           "val_acc": (pred == y).float().mean().item()}
    recalls = []
    for k in range(logits.shape[1]):
        mask = y == k
        if mask.any():
            out[f"val_recall_{k}"] = (pred[mask] == k).float().mean().item()
            recalls.append(out[f"val_recall_{k}"])
    out["val_bal_acc"] = float(np.mean(recalls))
    return out


def make_ema(model: nn.Module, decay: float):
    """An exponential moving average of the weights (buffers too), updated every step.

    On ~700 slices from ~70 pseudo-patients the validation loss of the raw
    weights jumps between epochs (normal vs benign recall swapping by 40
    points); the averaged weights move smoothly, so early stopping and the
    best-epoch choice pick a model rather than a lucky step.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    if not 0.0 < decay < 1.0:
        raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, cfg: dict,
        teacher: nn.Module | None = None, on_epoch: Callable[[dict], None] | None = None,
        device: torch.device | None = None) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW + one-cycle cosine schedule and early stopping.

    ``cfg`` is params.yaml's ``train`` section (plus ``alpha``/``temperature``
    from ``distill`` when a teacher is given). With ``ema_decay`` set, the
    weight average is what is validated and kept. Returns the model holding the
    best validation weights and the per-epoch history.
    """
    device = device or pick_device()
    model = model.to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad = False
    train_model = model
    if is_distributed():
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    epochs = int(cfg["epochs"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=epochs * len(train_loader),
        pct_start=min(0.3, 1.0 / max(epochs, 1)), anneal_strategy="cos")
    scaler = (torch.amp.GradScaler("cuda")
              if device.type == "cuda" and cfg.get("amp", True) else None)
    monitor = cfg.get("monitor", "val_loss")   # or a val metric to maximise, or "last"
    sign = 1.0 if monitor.endswith("loss") else -1.0
    best, best_state, best_epoch, history = math.inf, None, -1, []
    patience = int(cfg.get("early_stopping_patience", 3))
    ema = make_ema(model, float(cfg["ema_decay"])) if cfg.get("ema_decay") else None
    eval_model = ema.module if ema is not None else model
    for epoch in range(epochs):
        start = time.time()
        stats = train_one_epoch(train_model, train_loader, optimizer, device, scaler, teacher,
                                cfg.get("alpha", 0.5), cfg.get("temperature", 4.0),
                                scheduler, cfg.get("label_smoothing", 0.0),
                                desc=f"epoch {epoch + 1}/{epochs}",
                                freeze_bn=bool(cfg.get("freeze_bn", False)), ema=ema,
                                localise=float(cfg.get("localise") or 0),
                                target_class=cfg.get("localise_class"))
        stats.update(validate(eval_model, val_loader, device))
        stats.update(epoch=epoch + 1, seconds=round(time.time() - start, 1),
                     lr=optimizer.param_groups[0]["lr"])
        history.append(stats)
        score = -float(epoch) if monitor == "last" else sign * stats[monitor]
        if score < best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy(eval_model.state_dict())
        stats["best_epoch"] = best_epoch + 1
        if on_epoch:
            on_epoch(stats)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in stats.items()), flush=True)
        if epoch != best_epoch and epoch - best_epoch >= patience:
            print(f"early stop: no {monitor} improvement for {patience} epochs", flush=True)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history
