"""Normalised inputs of a model's own validation split, for checks that must not see test.

Used by ``python -m lungct lab half`` (``lungct.models.half.store_half``): the float16
rounding is checked on these images.
"""

from __future__ import annotations

import torch

from lungct.config import resolve
from lungct.data.splits import read_manifest, select
from lungct.training.datasets import SliceDataset, preload


def validation_inputs(model: torch.nn.Module, cfg: dict) -> tuple[torch.Tensor, str]:
    """Normalised inputs of the validation split of the model's own protocol, and its name."""
    protocol = model.card.get("protocol", "grouped")
    rows = select(read_manifest(resolve(cfg["data"]["manifest"])), protocol, "val")
    x, y = preload(resolve(cfg["data"]["root"]), rows, model.input_size,
                   getattr(model, "view", "full"))
    ds = SliceDataset(x, y, model.mean, model.std)
    return torch.stack([ds[i][0] for i in range(len(ds))]), f"{protocol} val"
