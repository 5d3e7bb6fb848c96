"""What the pipeline needs of a classifier and of a guard: two small Protocols.

``lungct.inference.Classifier`` and ``lungct.guard.InputGuard`` are the real
ones; test doubles subclass these (for the defaults) and implement the rest.
The stages call these methods and nothing else, so there is no branch for
objects of another shape.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Verdict(Protocol):
    """The guard's answer for one slice (``lungct.guard.Verdict``)."""

    status: str
    """'accepted' | 'not_image' | 'not_ct' | 'outside_lungs'."""
    reason: str

    def as_dict(self) -> dict: ...


@runtime_checkable
class SliceGuard(Protocol):
    """Is this a lung CT slice? Prepared per slice (threads), then scored in one batch."""

    def prepare(self, gray: np.ndarray, data: bytes | None = None, seg: Any = None) -> Any:
        """The per-slice work (given the slice's ``lungct.lungs.Segmentation``)."""
        ...

    def check_prepared(self, items: Sequence[Any]) -> list[Verdict]:
        """One verdict per prepared slice."""
        ...


@runtime_checkable
class SliceClassifier(Protocol):
    """A model with its preprocessing and calibration (``lungct.inference.Classifier``)."""

    name: str
    backend: str
    """'onnx' or 'torch': a torch model is locked against heatmap hooks while it classifies."""
    view: str
    """'full' or 'lungs': a lung-view model's input is cut from the slice's segmentation."""
    card: dict
    folder: Any
    model: Any
    """The torch model when ``backend`` is 'torch' (for its lock), else None."""

    def prepare(self, gray: np.ndarray, seg: Any = None) -> np.ndarray: ...

    def predict_prepared(self, arrays: Sequence[np.ndarray]) -> list: ...

    def predict_beside(self, arrays: Sequence[np.ndarray]) -> list:
        """``predict_prepared`` on one thread, for running beside the guard."""
        ...


class ClassifierBase:
    """Defaults for a ``SliceClassifier`` double: full view, ONNX-like, no card."""

    name, backend, view, folder, model = "classifier", "onnx", "full", None, None
    card: dict = {}

    def predict_beside(self, arrays):
        return self.predict_prepared(arrays)
