"""Classify decoded slices with a saved model: the one path for CLI, app and benchmark.

A ``Classifier`` wraps a model with its preprocessing contract (input size,
normalisation, class order) and its calibration temperature (fitted on the
validation split by ``evaluate``; 1.0 when the card has none), so the
probability the app shows and the "unsure" flag rest on calibrated numbers.

Two backends compute the logits: ONNX Runtime (``models/<name>/model.onnx``,
written by ``python -m lungct lab export``; 2-4x faster on a CPU) and PyTorch
eager. ``Classifier.from_name`` picks one from ``runtime.backend`` /
``LUNGCT_BACKEND`` (see :mod:`lungct.onnx_runtime`) and falls back to
PyTorch when the ONNX file or onnxruntime is missing or unusable. The
PyTorch model is loaded lazily, the first time ``.torch_model`` (alias
``.model``) is used, e.g. for a Grad-CAM heatmap; classification through ONNX
never loads it. Temperature and softmax are applied in numpy for both
backends.

>>> clf = Classifier.from_name("student_kd")                   # doctest: +SKIP
>>> clf.predict_bytes(open("slice.png", "rb").read()).as_dict()  # doctest: +SKIP
>>> explain(clf.torch_model, gray)            # loads the weights now  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lungct import slice_label
from lungct.onnx_runtime import (ONNX_FILE, OnnxModel, OnnxUnavailable, calibrated_softmax,
                                 load_onnx, runtime_settings)
from lungct.preprocess import decode_image, model_input

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One slice's result. ``probabilities`` maps class name to calibrated probability;
    ``label`` follows ``lungct.slice_label`` (malignant only from the threshold on)."""

    label: str
    probabilities: dict[str, float]
    model: str
    unsure: bool
    extra: dict = field(default_factory=dict)
    backend: str = ""
    """"onnx" or "torch": what computed the logits."""

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def as_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities,
                "model": self.model, "unsure": self.unsure, "backend": self.backend,
                **self.extra}


class Classifier:
    """A model (ONNX Runtime session and/or PyTorch module) plus preprocessing and calibration.

    ``Classifier(torch_model)`` wraps a loaded PyTorch model (backend "torch");
    ``Classifier.from_name(name)`` is the production door (ONNX when possible).
    Attributes: ``name``, ``classes``, ``size``, ``mean``, ``std``,
    ``temperature``, ``unsure_below``, ``card``, ``folder``, ``backend``
    ("onnx" | "torch"), ``fallback_reason`` (why ONNX is not used, or None).
    """

    def __init__(self, model: torch.nn.Module | None = None, unsure_below: float = 0.6, *,
                 onnx: OnnxModel | None = None, card: dict | None = None,
                 folder: str | Path | None = None):
        if model is None and onnx is None:
            raise ValueError("Classifier needs a PyTorch model or an ONNX model")
        if model is None and (card is None or folder is None):
            raise ValueError("an ONNX-only Classifier needs the model card and folder")
        self._torch_model = model.eval() if model is not None else None
        self._onnx = onnx
        self._lock = threading.Lock()
        self.folder = Path(folder) if folder is not None else None
        if model is not None:
            self.card = card or getattr(model, "card", {}) or {}
            self.name = getattr(model, "name", None) or (self.folder.name if self.folder
                                                         else model.arch)
            self.classes = tuple(model.classes)
            self.size = int(model.input_size)
            self.mean, self.std = tuple(model.mean), tuple(model.std)
            self.view = getattr(model, "view", None) or self.card.get("view", "full")
        else:
            self.card = card
            self.name = self.folder.name
            self.classes = tuple(card["classes"])
            self.size = int(card["input_size"])
            self.mean, self.std = tuple(card["mean"]), tuple(card["std"])
            self.view = card.get("view", "full")
        self.temperature = float((self.card.get("calibration") or {}).get("temperature", 1.0))
        self.unsure_below = float(unsure_below)
        self.backend = "onnx" if onnx is not None else "torch"
        self.fallback_reason: str | None = None

    # ------------------------------------------------------------ construction

    @classmethod
    def from_name(cls, name_or_path: str | Path, unsure_below: float = 0.6, *,
                  backend: str | None = None, threads: int | None = None,
                  cfg: dict | None = None, precision: str | None = None) -> "Classifier":
        """A classifier for a shipped model name or a model folder.

        ``backend`` (default: ``LUNGCT_BACKEND``, else ``runtime.backend`` of
        ``cfg`` or params.yaml, else "auto"): "auto" uses ONNX Runtime when it
        can and PyTorch otherwise (a warning when a model.onnx exists but is
        unusable: corrupt, stale, mismatched); "onnx" raises OnnxUnavailable
        instead of falling back; "torch" never touches ONNX. Raises
        ModelLoadError for a missing model or unusable weights. ``precision``
        (default ``runtime.precision``): "int8" runs ONNX Runtime on the checked
        ``model.int8.onnx`` when built (``lungct.training.quantize``), else float32.
        """
        from lungct.models import load_model
        from lungct.models.checkpoint import read_card, resolve_model_dir

        folder = resolve_model_dir(name_or_path)
        card = read_card(folder)
        settings = runtime_settings(cfg, backend, threads, precision)
        chosen = settings.backend
        reason = None
        if chosen != "torch":
            try:
                onnx = load_onnx(folder, card, settings.threads, settings.max_batch,
                                 settings.parity_max_diff, settings.precision)
            except OnnxUnavailable as err:
                if chosen == "onnx":
                    raise
                reason = str(err)
                if (folder / ONNX_FILE).exists() and err.kind != "no_runtime":
                    warnings.warn(f"{folder.name}: not using ONNX Runtime: {reason}. "
                                  "Falling back to PyTorch.", RuntimeWarning, stacklevel=2)
                else:
                    log.info("%s: PyTorch backend (%s)", folder.name, reason)
            else:
                return cls(None, unsure_below, onnx=onnx, card=card, folder=folder)
        clf = cls(load_model(folder), unsure_below, card=card, folder=folder)
        clf.fallback_reason = reason
        return clf

    # -------------------------------------------------------------- models

    @property
    def torch_model(self) -> torch.nn.Module:
        """The PyTorch model (Grad-CAM needs it); loaded on first use."""
        if self._torch_model is None:
            with self._lock:
                if self._torch_model is None:
                    from lungct.models import load_model
                    self._torch_model = load_model(self.folder)
        return self._torch_model

    @torch_model.setter
    def torch_model(self, model: torch.nn.Module) -> None:
        self._torch_model = model.eval()

    model = torch_model
    """Backward-compatible alias of ``torch_model``."""

    @property
    def torch_loaded(self) -> bool:
        """Whether the PyTorch weights are in memory (False until a heatmap or torch run)."""
        return self._torch_model is not None

    @property
    def onnx_model(self) -> OnnxModel | None:
        return self._onnx

    def describe(self) -> dict:
        """What runs this classifier, for logs and the app's "about" box."""
        out = {"model": self.name, "backend": self.backend,
               "torch_loaded": self.torch_loaded, "temperature": self.temperature}
        if self._onnx is not None:
            out.update(onnx_file=str(self._onnx.path), threads=self._onnx.threads,
                       precision=self._onnx.precision)
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        return out

    # ---------------------------------------------------------- numeric path

    def prepare(self, gray: np.ndarray, seg=None) -> np.ndarray:
        """(3, size, size) float32 model input for a [0, 1] grey slice (``seg``: its
        ``lungct.lungs.Segmentation`` when already made, for a lung-view model)."""
        return model_input(gray, self.size, self.mean, self.std, self.view, seg)

    def tensor(self, gray: np.ndarray) -> torch.Tensor:
        """(3, size, size) model input for a [0, 1] grey slice, as a torch tensor."""
        return torch.from_numpy(self.prepare(gray))

    def logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw (uncalibrated) logits, (N, classes) float32, for a (N, 3, size, size) batch."""
        if self._onnx is not None:
            x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
            return self._onnx(x)
        model = self.torch_model
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            return model(x.to(next(model.parameters()).device)).float().cpu().numpy()

    def probabilities(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities for a (N, 3, size, size) batch."""
        return calibrated_softmax(self.logits(batch), self.temperature)

    def _prediction(self, probs: np.ndarray) -> Prediction:
        """The label under ``lungct.slice_label`` (the case verdict's rule, not a bare
        argmax); unsure when the top probability is below ``unsure_below`` or the label is
        not the likeliest class (a likeliest malignant below the threshold)."""
        probabilities = {c: float(p) for c, p in zip(self.classes, probs)}
        label = slice_label(probabilities, classes=self.classes)
        top = self.classes[int(np.argmax(probs))]
        return Prediction(label=label, probabilities=probabilities, model=self.name,
                          unsure=bool(probabilities[top] < self.unsure_below or label != top),
                          backend=self.backend)

    def predict_prepared(self, arrays: list[np.ndarray] | np.ndarray) -> list[Prediction]:
        """Predictions for inputs already made by ``prepare`` (one forward pass)."""
        if len(arrays) == 0:
            return []
        batch = np.stack(arrays) if not isinstance(arrays, np.ndarray) else arrays
        return [self._prediction(p) for p in self.probabilities(batch)]

    def predict_beside(self, arrays: list[np.ndarray] | np.ndarray) -> list[Prediction]:
        """``predict_prepared`` on one thread (ONNX Runtime), for running beside other work;
        the same numbers."""
        if self._onnx is None or len(arrays) == 0:
            return self.predict_prepared(arrays)
        batch = np.stack(arrays) if not isinstance(arrays, np.ndarray) else arrays
        logits = self._onnx.beside()(batch)
        return [self._prediction(p) for p in calibrated_softmax(logits, self.temperature)]

    def predict_gray(self, gray: np.ndarray) -> Prediction:
        return self.predict_prepared([self.prepare(gray)])[0]

    def predict_many(self, grays: list[np.ndarray], batch_size: int = 32) -> list[Prediction]:
        out = []
        for i in range(0, len(grays), batch_size):
            out.extend(self.predict_prepared([self.prepare(g) for g in grays[i:i + batch_size]]))
        return out

    def predict_bytes(self, data: bytes, name: str = "", window: str = "lung") -> Prediction:
        """Decode (raises InvalidImageError on bad input) and classify one file's bytes."""
        return self.predict_gray(decode_image(data, name=name, window=window))
