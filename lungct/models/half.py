"""Store a trained model's weights in float16 after checking that nothing changes.

Halving the file is what brings the default student under its 10 MB budget.
It is not free in general: a student fine-tuned with live BatchNorm statistics
lost 8 points of validation accuracy when rounded (near-zero running variances
lose their precision). So the rounding is checked on the model's own
validation split (never test): every label must stay the same and no class
probability may move by more than ``tol``; the result goes into the card as
``storage`` and the weights are rewritten only if the check passes.
Models still compute in float32: ``load_model`` upcasts on load.
The validation inputs come from ``lungct.training.validation`` (models never
import the data or training layers).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from lungct.models.checkpoint import load_model, resolve_model_dir, save_model


@torch.no_grad()
def _probs(model, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([torch.softmax(model(x[i:i + batch]), 1) for i in range(0, len(x), batch)])


def rounding_check(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Compare the model with a float16-rounded copy of itself on inputs ``x``."""
    rounded = copy.deepcopy(model)
    for t in list(rounded.parameters()) + list(rounded.buffers()):
        if t.is_floating_point():
            t.data.copy_(t.data.half().float())
    a, b = _probs(model.eval(), x), _probs(rounded.eval(), x)
    return {"images": len(x), "label_changes": int((a.argmax(1) != b.argmax(1)).sum()),
            "max_prob_diff": round(float((a - b).abs().max()), 6)}


def store_half(path_or_name: str | Path, x: torch.Tensor, split: str, tol: float = 0.02,
               model: torch.nn.Module | None = None) -> dict:
    """Rewrite a model folder's weights in float16 if the rounding check passes.

    ``x``: normalised inputs from the model's validation split (named by ``split``);
    ``model``: the folder's model when the caller has already loaded it.
    Returns the check, with ``stored`` saying whether the file was rewritten.
    """
    folder = resolve_model_dir(path_or_name)
    model = model if model is not None else load_model(folder)
    stored = model.card.get("storage") or {}
    if stored.get("dtype") == "float16":  # already halved: keep the check made on float32
        return {**stored.get("check", {}), "stored": True}
    check = {**rounding_check(model, x), "split": split, "tolerance": tol}
    check["stored"] = check["label_changes"] == 0 and check["max_prob_diff"] <= tol
    card = dict(model.card)
    card["storage"] = {"dtype": "float16" if check["stored"] else "float32", "check": check}
    save_model(model, folder, card, half=check["stored"])
    return check
