"""Which models the app can show: cards, weights, test predictions, versions.

The models folder is read at call time (``LUNGCT_MODELS`` or ``models/``), so
tests and private deployments can point the app elsewhere without restarting
Python. A card may exist without its weights (VGG16 weights are too large for
git): such a model is listed with its metrics but never used for inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct import CLASSES
from lungct.pipeline import model_version, weights_digest
from lungct.config import SAMPLES_DIR, models_dir
from lungct.guard import CARD_FILE as GUARD_CARD
from lungct.guard import WEIGHTS_FILE as GUARD_WEIGHTS
from lungct.guard import guard_dir
from lungct.models.checkpoint import (CARD_FILE, PREDICTIONS_FILE, WEIGHTS_FILE, list_shipped,
                                      read_card)
from lungct.onnx_runtime import ONNX_FILE

NOT_EVALUATED = "not evaluated"
CLINICAL_PROTOCOLS = ("grouped",)
"""Protocols whose models the clinical pages may run: split by patient, honest figures. The
"paper" protocol's image-level split leaks near-duplicate slices of a patient into the test
split; its models are research references (Model comparison, Experiments) only."""
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")


@dataclass
class ModelEntry:
    """One model folder as the app sees it."""

    name: str
    folder: Path
    card: dict = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        return (self.folder / WEIGHTS_FILE).is_file()

    @property
    def protocol(self) -> str:
        return str(self.card.get("protocol") or "grouped")

    @property
    def clinical(self) -> bool:
        """Whether the clinical pages may offer it (a ``CLINICAL_PROTOCOLS`` model)."""
        return self.protocol in CLINICAL_PROTOCOLS

    @property
    def test_metrics(self) -> dict | None:
        return self.card.get("test_metrics") or None

    @property
    def description(self) -> str:
        return str(self.card.get("description") or "")

    def version(self) -> str:
        """lungct version, creation time and a short hash of the weights file."""
        return model_version(self.folder, self.card)


def list_entries(folder: str | Path | None = None) -> list[ModelEntry]:
    """Every model folder with a readable card, sorted by name; broken cards are skipped."""
    folder = Path(folder) if folder else models_dir()
    out = []
    for name in list_shipped(folder):
        try:
            out.append(ModelEntry(name, folder / name, read_card(folder / name)))
        except Exception:  # a half-written card while training: show the others
            continue
    return out


def runnable(entries: list[ModelEntry]) -> list[ModelEntry]:
    """The entries whose weights are present (usable for live inference)."""
    return [e for e in entries if e.has_weights]


def clinical(entries: list[ModelEntry]) -> list[ModelEntry]:
    """The runnable entries the clinical pages (Classify, Study, PACS, Grad-CAM) may use:
    research-protocol models (``*_paper``) stay on the research pages."""
    return [e for e in runnable(entries) if e.clinical]


def default_model(entries: list[ModelEntry], preferred: str) -> str | None:
    """``preferred`` if a clinical page can run it, else the first such model, else None."""
    names = [e.name for e in clinical(entries)]
    if preferred in names:
        return preferred
    return names[0] if names else None


def test_predictions(folder: str | Path) -> dict | None:
    """``test_predictions.json`` as arrays: y_true (n,), probs (n, 3), protocol; or None."""
    path = Path(folder) / PREDICTIONS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        classes = list(raw.get("classes") or CLASSES)
        y = np.array([classes.index(r["label"]) for r in raw["rows"]], dtype=np.int64)
        probs = np.array([r["probs"] for r in raw["rows"]], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if y.size == 0 or probs.shape != (y.size, len(classes)):
        return None
    return {"y_true": y, "probs": probs, "classes": classes,
            "protocol": raw.get("protocol"), "part": raw.get("part", "test")}


def list_samples(folder: str | Path = SAMPLES_DIR) -> list[str]:
    """File names of the shipped example slices (public data, see samples/README.md)."""
    return sorted(p.name for p in Path(folder).glob("*") if p.suffix.lower() in SAMPLE_SUFFIXES)


def read_sample(name: str, folder: str | Path = SAMPLES_DIR) -> bytes:
    """Bytes of one example; only names from ``list_samples`` are accepted."""
    if name not in list_samples(folder):
        raise ValueError(f"unknown example {name!r}; examples: {list_samples(folder)}")
    return (Path(folder) / name).read_bytes()


def _stamps(folder: Path, names: tuple[str, ...]) -> str:
    out = []
    for name in names:
        try:
            out.append(str((folder / name).stat().st_mtime_ns))
        except OSError:
            out.append("0")
    return f"{folder.resolve()}@{'-'.join(out)}"


def model_key(entry: ModelEntry) -> str:
    """A cache key that changes when the weights, ONNX export or card are replaced."""
    return _stamps(entry.folder, (WEIGHTS_FILE, ONNX_FILE, CARD_FILE))


def guard_folder() -> Path:
    """Where the input guard lives (``lungct.guard.guard_dir``): beside the models."""
    return guard_dir()


def guard_key() -> str:
    """A cache key that changes when the guard's files are replaced."""
    return _stamps(guard_folder(), (GUARD_WEIGHTS, GUARD_CARD))


__all__ = ["guard_folder", "guard_key", "list_samples", "model_key", "read_sample", "CARD_FILE", "CLINICAL_PROTOCOLS", "ModelEntry", "NOT_EVALUATED", "clinical", "default_model", "list_entries",
           "models_dir", "runnable", "test_predictions", "weights_digest"]
