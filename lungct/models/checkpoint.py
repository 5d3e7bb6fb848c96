"""Self-describing model files: ``model.safetensors`` + ``card.json``.

As in nanoGPT, a checkpoint carries what rebuilds it (architecture name and
arguments, classes, input size, normalisation) and what it is worth (training
config, protocol, metrics). The card is also stored in the safetensors header,
so the weights file alone can rebuild the model. No pickle anywhere: a
tampered or truncated file gives a ModelLoadError, never code execution.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lungct.config import models_dir
from lungct.errors import LungctError
from lungct.models.registry import create_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
PREDICTIONS_FILE = "test_predictions.json"
"""Per-image test predictions written by ``python -m lungct lab evaluate`` (``{part}`` = test)."""


def __getattr__(name: str):
    # MODELS_DIR, the older name of the models folder, follows lungct.config.models_dir
    if name == "MODELS_DIR":
        return models_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ModelLoadError(LungctError, RuntimeError):
    """A model folder or file could not be turned into a working model."""


def model_card_base(model: nn.Module) -> dict:
    """The rebuild-relevant part of a card, taken from a created model."""
    return {"arch": model.arch, "arch_kwargs": getattr(model, "arch_kwargs", {}),
            "classes": list(model.classes), "num_classes": len(model.classes),
            "input_size": model.input_size, "mean": list(model.mean), "std": list(model.std),
            "view": getattr(model, "view", "full")}


def save_model(model: nn.Module, folder: str | Path, card: dict | None = None,
               half: bool = False) -> Path:
    """Write weights and card; float32 by default.

    ``half=True`` halves the file. Use it through ``lungct.models.half.store_half``,
    which first checks on validation images that the rounding changes no label
    (a student trained with live BatchNorm statistics lost 8 points when rounded).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full_card = {**model_card_base(model), **(card or {})}
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE),
              metadata={"lungct_card": json.dumps(model_card_base(model))})
    write_card(folder, full_card)
    return folder


def write_card(folder: str | Path, card: dict) -> None:
    with open(Path(folder) / CARD_FILE, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, sort_keys=False)
        fh.write("\n")


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelLoadError(f"{path} not found") from err
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from err


def resolve_model_dir(path_or_name: str | Path) -> Path:
    """A model folder from a folder path, a weights file path or a name under models/."""
    p = Path(path_or_name)
    if p.suffix == ".safetensors":
        p = p.parent
    if p.is_dir():
        return p
    folder = models_dir()
    if (folder / str(path_or_name)).is_dir():
        return folder / str(path_or_name)
    known = sorted(d.name for d in folder.glob("*") if (d / CARD_FILE).exists())
    raise ModelLoadError(f"no model {str(path_or_name)!r}; shipped models: {known}")


def load_model(path_or_name: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model in eval mode, float32, with its card as ``model.card``."""
    folder = resolve_model_dir(path_or_name)
    card = read_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise ModelLoadError(f"{weights} is missing (large weights are DVC outputs: "
                             "`dvc repro` or `dvc pull` fetches them)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{weights} is corrupt or truncated: {err}") from err
    try:
        model = create_model(card["arch"], num_classes=card["num_classes"], pretrained=False,
                             input_size=card["input_size"], **card.get("arch_kwargs", {}))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()}, strict=True)
        model.mean, model.std = tuple(card["mean"]), tuple(card["std"])
        model.classes = tuple(card["classes"])
        model.view = card.get("view", "full")
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{weights} does not match its card "
                             f"({card.get('arch')}): {str(err)[:300]}") from err
    model.card = card
    model.name = folder.name
    return model.to(device).eval()


def list_shipped(folder: str | Path | None = None) -> list[str]:
    """Names of model folders in ``folder`` (default: ``models_dir()``) that have a card
    (weights may be a DVC output)."""
    folder = Path(folder) if folder is not None else models_dir()
    return sorted(d.name for d in folder.glob("*") if (d / CARD_FILE).exists())


def list_with_weights(folder: str | Path | None = None) -> list[str]:
    """``list_shipped`` names whose weights are present (not only a DVC pointer's card)."""
    folder = Path(folder) if folder is not None else models_dir()
    return [n for n in list_shipped(folder) if (folder / n / WEIGHTS_FILE).exists()]
