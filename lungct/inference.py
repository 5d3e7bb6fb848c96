"""Classify decoded slices with a loaded model: the one path for CLI, app and benchmark.

A ``Classifier`` wraps a model from ``load_model`` with its preprocessing
contract (input size, normalisation, class order) and its calibration
temperature (fitted on the validation split by ``evaluate``; 1.0 when the
card has none), so the probability the app shows and the "unsure" flag rest
on calibrated numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lungct.preprocess import decode_image, to_tensor


@dataclass
class Prediction:
    """One slice's result. ``probabilities`` maps class name to calibrated probability."""

    label: str
    probabilities: dict[str, float]
    model: str
    unsure: bool
    extra: dict = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def as_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities,
                "model": self.model, "unsure": self.unsure, **self.extra}


class Classifier:
    """A model plus its preprocessing and calibration.

    >>> clf = Classifier(load_model("student_kd"))          # doctest: +SKIP
    >>> clf.predict_bytes(open("slice.png", "rb").read())    # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, unsure_below: float = 0.6):
        self.model = model.eval()
        self.name = getattr(model, "name", model.arch)
        self.classes = tuple(model.classes)
        self.size = int(model.input_size)
        self.mean, self.std = tuple(model.mean), tuple(model.std)
        card = getattr(model, "card", {}) or {}
        self.temperature = float(card.get("calibration", {}).get("temperature", 1.0))
        self.unsure_below = float(unsure_below)

    def tensor(self, gray: np.ndarray) -> torch.Tensor:
        """(3, size, size) model input for a [0, 1] grey slice."""
        return to_tensor(gray, self.size, self.mean, self.std)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities for a (N, 3, size, size) batch."""
        logits = self.model(batch.to(next(self.model.parameters()).device)).float().cpu()
        return torch.softmax(logits / self.temperature, dim=1).numpy()

    def _prediction(self, probs: np.ndarray) -> Prediction:
        k = int(np.argmax(probs))
        return Prediction(label=self.classes[k],
                          probabilities={c: float(p) for c, p in zip(self.classes, probs)},
                          model=self.name, unsure=bool(probs[k] < self.unsure_below))

    def predict_gray(self, gray: np.ndarray) -> Prediction:
        return self.predict_many([gray])[0]

    def predict_many(self, grays: list[np.ndarray], batch_size: int = 32) -> list[Prediction]:
        out = []
        for i in range(0, len(grays), batch_size):
            batch = torch.stack([self.tensor(g) for g in grays[i:i + batch_size]])
            out.extend(self._prediction(p) for p in self.probabilities(batch))
        return out

    def predict_bytes(self, data: bytes, name: str = "", window: str = "lung") -> Prediction:
        """Decode (raises InvalidImageError on bad input) and classify one file's bytes."""
        return self.predict_gray(decode_image(data, name=name, window=window))
