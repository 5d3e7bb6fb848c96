"""Fixed ImageNet EfficientNet-Lite0 features for the guard's learned score.

Not any of our classifiers: the verdict does not depend on which classifier,
PyTorch or ONNX, runs afterwards. Features of several depths are pooled (a
feature ensemble, Lee et al. 2018): early stages see texture and intensity,
the last stage sees layout.
"""

from __future__ import annotations

import threading
from typing import Iterable, Sequence

import numpy as np

from lungct.guard.verdict import as_gray

EXTRACTOR = "efficientnet_lite0"
EXTRACTOR_SIZE = 224
LAYERS = ("blocks.3", "blocks.5", "head")
"""Pooled feature depths: block 3 (80 ch at 1/16), block 5 (192 ch at 1/32), head (1280 ch)."""


class FeatureExtractor:
    """Pooled multi-depth features of the ImageNet EfficientNet-Lite0 (fixed, never trained).

    The forward pass is written out (stem, blocks, head) so intermediate
    features need no hooks: one extractor can serve many threads at once.
    """

    def __init__(self, layers: Sequence[str] = LAYERS, size: int = EXTRACTOR_SIZE):
        import torch

        from lungct.models import create_model

        self.layers = tuple(layers)
        self.size = int(size)
        self.model = create_model(EXTRACTOR, pretrained=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mean, self.std = tuple(self.model.mean), tuple(self.model.std)
        self._torch = torch

    def tensor(self, view: np.ndarray):
        """A (3, size, size) tensor of an image already in the guard's view."""
        from lungct.preprocess import to_tensor
        return to_tensor(as_gray(view), self.size, self.mean, self.std)

    def __call__(self, grays: Iterable[np.ndarray], batch_size: int = 32) -> dict[str, np.ndarray]:
        """{layer: (N, C) float32} for a list of [0, 1] slices."""
        torch = self._torch
        grays = list(grays)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        m = self.model
        with torch.inference_mode():
            for i in range(0, len(grays), batch_size):
                x = torch.stack([self.tensor(g) for g in grays[i:i + batch_size]])
                x = m.bn1(m.conv_stem(x))
                for j, block in enumerate(m.blocks):
                    x = block(x)
                    if f"blocks.{j}" in parts:
                        parts[f"blocks.{j}"].append(x.mean((2, 3)).numpy())
                if "head" in parts:
                    parts["head"].append(m.bn2(m.conv_head(x)).mean((2, 3)).numpy())
        return {k: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)).astype(np.float32)
                for k, v in parts.items()}



_EXTRACTORS: dict[tuple, FeatureExtractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


def shared_extractor(layers: Sequence[str] = LAYERS,
                     size: int = EXTRACTOR_SIZE) -> FeatureExtractor:
    """One extractor per (layers, size) per process (it is read-only, so threads may share it)."""
    key = (tuple(layers), int(size))
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = FeatureExtractor(layers, size)
        return _EXTRACTORS[key]
