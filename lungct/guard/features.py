"""Fixed ImageNet EfficientNet-Lite0 features for the guard's learned score.

Not any of our classifiers: the verdict does not depend on which classifier,
PyTorch or ONNX, runs afterwards. Features of several depths are pooled (a
feature ensemble, Lee et al. 2018): early stages see texture and intensity,
the last stage sees layout.

Two backends compute the same features: PyTorch eager (``FeatureExtractor``,
always there) and ONNX Runtime (``OnnxFeatureExtractor``, about 3x faster on
a small CPU). ``lungct.training.guard_fit.export_onnx`` writes ``extractor.onnx`` beside the
guard (a git-ignored build output, made by ``make onnx``) only after the two
agree on the guard's own scores; ``shared_extractor`` uses it when it is
there and matches, PyTorch otherwise.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lungct.guard.verdict import as_gray
from lungct.onnx_runtime import CALIBRATION_FILE  # the guard's ranges: `guard fit` records them

EXTRACTOR = "efficientnet_lite0"
EXTRACTOR_SIZE = 128
"""The guard's view side. 128 px has a third of 224 px's pixels (the benchmark's stage timing:
the guard's network 3.4-4.8 ms against 5.7), and the refit at 128 px refused and accepted as
well or better (guard.json's report, reports/safety.json; the README's guard section)."""
LAYERS = ("blocks.3", "blocks.5", "head")
"""Pooled feature depths: block 3 (80 ch at 1/16), block 5 (192 ch at 1/32), head (1280 ch)."""
EXTRACTOR_FILE = "extractor.onnx"
"""The ONNX Runtime twin of the extractor, beside the guard's files (a build output)."""
EXTRACTOR_KEY = "lungct_guard_extractor"
"""ONNX metadata key: what the file computes (arch, layers, size, mean, std)."""
INT8_FILE = "extractor.int8.onnx"
"""The extractor in int8 (a build output): 1.3 CPU-ms per view against 3.0 in float32
(one thread, 128 px, the 2-core VM; ad-hoc timing), the guard's share of a folder run."""
INT8_KEY = "lungct_guard_int8"
"""ONNX metadata key of the int8 file: the SHA-256 of the ranges it was built from."""


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

    def pooled(self, x) -> list:
        """The pooled (N, C) features of a (N, 3, size, size) tensor, one per layer, in order."""
        m, out = self.model, {}
        x = m.bn1(m.conv_stem(x))
        for j, block in enumerate(m.blocks):
            x = block(x)
            if f"blocks.{j}" in self.layers:
                out[f"blocks.{j}"] = x.mean((2, 3))
        if "head" in self.layers:
            out["head"] = m.bn2(m.conv_head(x)).mean((2, 3))
        return [out[k] for k in self.layers]

    def __call__(self, grays: Iterable[np.ndarray], batch_size: int = 32) -> dict[str, np.ndarray]:
        """{layer: (N, C) float32} for a list of [0, 1] slices."""
        torch = self._torch
        grays = list(grays)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        with torch.inference_mode():
            for i in range(0, len(grays), batch_size):
                x = torch.stack([self.tensor(g) for g in grays[i:i + batch_size]])
                for k, f in zip(self.layers, self.pooled(x)):
                    parts[k].append(f.numpy())
        return _join(parts)

    def contract(self) -> dict:
        """What an ONNX twin must compute to stand in for this extractor."""
        return {"arch": EXTRACTOR, "layers": list(self.layers), "size": self.size,
                "mean": [round(float(v), 6) for v in self.mean],
                "std": [round(float(v), 6) for v in self.std]}


def _join(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)).astype(np.float32)
            for k, v in parts.items()}


class OnnxFeatureExtractor:
    """The same pooled features computed by ONNX Runtime from ``extractor.onnx``."""

    def __init__(self, path: str | Path, layers: Sequence[str] = LAYERS,
                 size: int = EXTRACTOR_SIZE, threads: int = 0):
        from lungct.onnx_runtime import OnnxUnavailable, open_session

        self.layers, self.size, self.path = tuple(layers), int(size), Path(path)
        self.session = open_session(self.path, threads).session
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        try:
            self.meta = json.loads(meta[EXTRACTOR_KEY])
        except (KeyError, ValueError):
            raise OnnxUnavailable(f"{self.path} is not a lungct guard extractor") from None
        if self.meta.get("layers") != list(self.layers) or self.meta.get("size") != self.size:
            raise OnnxUnavailable(f"{self.path} computes layers {self.meta.get('layers')} at "
                                  f"{self.meta.get('size')} px, the guard needs "
                                  f"{list(self.layers)} at {self.size} px")
        self.mean, self.std = tuple(self.meta["mean"]), tuple(self.meta["std"])
        self.input_name = self.session.get_inputs()[0].name
        self.int8 = json.loads(meta[INT8_KEY]) if INT8_KEY in meta else None
        """The int8 build's record (the ranges' SHA-256), or None for float32."""
        self.precision = "int8" if self.int8 is not None else "float32"

    def __call__(self, grays: Iterable[np.ndarray], batch_size: int = 32) -> dict[str, np.ndarray]:
        from lungct.preprocess import model_input

        grays = list(grays)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        for i in range(0, len(grays), batch_size):
            x = np.stack([model_input(as_gray(g), self.size, self.mean, self.std)
                          for g in grays[i:i + batch_size]])
            for k, f in zip(self.layers, self.session.run(None, {self.input_name: x})):
                parts[k].append(f)
        return _join(parts)


def _int8_build(onnx_path: Path) -> tuple[Path, str] | None:
    """(the int8 build beside ``onnx_path``, the SHA-256 of the ranges beside it), when
    both files are there."""
    from lungct.onnx_runtime import file_sha256

    path, ranges = onnx_path.with_name(INT8_FILE), onnx_path.with_name(CALIBRATION_FILE)
    if not path.is_file() or not ranges.is_file():
        return None
    return path, file_sha256(ranges)


def _int8_extractor(build: tuple[Path, str], layers, size: int, threads: int):
    """The int8 extractor when it opens and was built from those ranges (a refit guard
    never runs on a stale build), else None."""
    from lungct.onnx_runtime import OnnxUnavailable

    path, ranges_sha = build
    try:
        extractor = OnnxFeatureExtractor(path, layers, size, threads)
    except OnnxUnavailable:
        return None
    return extractor if (extractor.int8 or {}).get("calibration_sha256") == ranges_sha else None


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


def shared_extractor(layers: Sequence[str] = LAYERS, size: int = EXTRACTOR_SIZE,
                     onnx_path: str | Path | None = None, threads: int | None = None):
    """One extractor per (layers, size, file, threads) per process (read-only: threads may
    share it).

    ONNX Runtime from ``onnx_path`` when that file exists, opens and computes
    these layers at this size (and the runtime backend is not forced to
    ``torch``); PyTorch otherwise. With ``runtime.precision`` int8 (the
    default), the int8 build beside it (``INT8_FILE``) when it is there and
    built from the ranges beside it. ``threads``: its intra-op threads (None:
    ``runtime.threads``; 0: half the CPUs, ``side_threads``).
    """
    from lungct.onnx_runtime import OnnxUnavailable, runtime_settings, side_threads

    settings = runtime_settings()
    use_onnx = (onnx_path is not None and Path(onnx_path).is_file()
                and settings.backend != "torch")
    int8 = _int8_build(Path(onnx_path)) if use_onnx and settings.precision == "int8" else None
    threads = (settings.threads if threads is None else int(threads)) or side_threads()
    key = (tuple(layers), int(size), str(onnx_path) if use_onnx else None, threads,
           int8 and (str(int8[0]), int8[1]))
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            extractor = _int8_extractor(int8, layers, size, threads) if int8 else None
            if use_onnx and extractor is None:
                try:
                    extractor = OnnxFeatureExtractor(onnx_path, layers, size, threads)
                except OnnxUnavailable:
                    extractor = None   # a stale or foreign file: the PyTorch path is exact
            if extractor is None and onnx_path is not None and settings.backend != "torch":
                _slow_path_notice(Path(onnx_path))
            _EXTRACTORS[key] = extractor or FeatureExtractor(layers, size)
        return _EXTRACTORS[key]


def _slow_path_notice(onnx_path: Path) -> None:
    """One line on stderr when the guard runs on PyTorch because its ONNX build is missing or
    unusable: about 2.5x slower (44.5 against 124.5 images/s in a folder), which a user who
    installed with ``pip install -e .`` would otherwise never learn."""
    import sys

    why = "is missing" if not onnx_path.is_file() else "could not be used"
    print(f"note: the input guard runs on PyTorch ({onnx_path.name} {why}), about 2.5x slower; "
          "`make onnx` (or `python -m lungct guard export`) builds it", file=sys.stderr)
