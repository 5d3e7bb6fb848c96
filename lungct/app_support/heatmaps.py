"""Heatmaps in the app: one bounded store shared by every session, progress for slow methods.

Why not ``st.cache_data``: Streamlit records every element a cached function
touches and replays it on the next hit, and a progress bar created outside
the function cannot be replayed. So the heatmaps live in this small store
(kept by ``cache.heatmap_store``, one per process), and ``explain`` runs
outside any Streamlit cache, free to move a bar.

Time estimates for the slow methods come from ``python -m lungct lab bench-app cam``
(``reports/cam_seconds.json``), never from a constant.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from lungct.app_support.memory import release_freed
from lungct.config import load_config, report_path
from lungct.explain import CLASS_AGNOSTIC, SLOW_METHODS, explain

CAM_SECONDS_FILE = "cam_seconds.json"
"""Seconds per CAM method and model, written by ``python -m lungct lab bench-app cam``."""


class HeatmapStore:
    """Least recently used (heatmap, explained class) pairs, bounded in count and age."""

    def __init__(self, max_entries: int = 64, ttl_s: float = 1800.0):
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._items: OrderedDict[tuple, tuple[float, tuple]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            item = self._items.get(key)
            if item is None or time.monotonic() - item[0] > self.ttl_s:
                self._items.pop(key, None)
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: tuple, value: tuple) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def heatmap(store: HeatmapStore, model, model_key: str, gray: np.ndarray, method: str,
            target: str | None, layer: str | None,
            progress: Callable[[float], None] | None = None,
            seg=None) -> tuple[np.ndarray, str | None]:
    """(heatmap, explained class) of ``lungct.explain.explain``, from ``store`` when there.
    ``seg``: the slice's segmentation (``SliceResult.seg``), reused rather than redone.

    The explained class is None for a class-agnostic method (EigenCAM), which is
    therefore computed once whatever ``target`` says.
    """
    if method in CLASS_AGNOSTIC:
        target = None
    digest = hashlib.sha1(np.ascontiguousarray(gray).tobytes()).hexdigest()
    key = (model_key, digest, gray.shape, method, target, layer)
    found = store.get(key)
    if found is None:
        result = explain(model, gray, method=method, target_class=target, layer=layer,
                         progress=progress, seg=seg)
        found = (result.heatmap, result.target_class)
        store.put(key, found)
        release_freed()  # the passes' buffers, before the next heatmap reuses the heap
    return found


def measured_seconds(model_name: str, path: str | Path | None = None) -> dict[str, float]:
    """Seconds per CAM method for ``model_name`` as last measured; {} when never measured."""
    path = Path(path) if path else report_path(load_config(), CAM_SECONDS_FILE)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {m: float(s) for m, s in (report.get("models", {}).get(model_name) or {}).items()}


def slow_note(method: str, model_name: str) -> str:
    """How long ``method`` takes for this model, from the benchmark, for labels and bars."""
    seconds = measured_seconds(model_name).get(method)
    if seconds is None:
        return f"{method}: slow, not timed for {model_name} (python -m lungct lab bench-app cam)"
    return (f"{method}: about {max(1, round(seconds))} s "
            "(measured by python -m lungct lab bench-app cam)")


def progress_bar(container, method: str, model_name: str) -> Callable[[float], None] | None:
    """A callback that shows a slow method's progress in ``container`` and clears it when done.

    None for the fast methods. The bar appears only once work starts, so a
    heatmap served from the store shows none.
    """
    if method not in SLOW_METHODS:
        return None
    slot, text = container.empty(), slow_note(method, model_name)

    def report(share: float) -> None:
        if share >= 1.0:
            slot.empty()
        else:
            slot.progress(share, text=text)

    return report


def what_it_shows(card: dict, method: str) -> str | None:
    """One line from the model card on how far this model's heatmaps can be trusted to
    point at a lesion: the pointing game on Lung-PET-CT-Dx's tumour boxes (``python -m
    lungct lab pointing``) and whether a painted mass moves its score (``python -m lungct
    lesion-check``). None when the card holds neither figure."""
    parts = []
    point = ((card.get("pointing_game") or {}).get("methods") or {}).get(method)
    if isinstance(point, dict) and point.get("n"):
        parts.append(f"its {method} maximum fell on the tumour in {point['hits']} of "
                     f"{point['n']} tumour slices of another hospital (Lung-PET-CT-Dx)")
    lesion = card.get("lesion_sensitivity") or {}
    if lesion.get("n"):
        called = lesion["called_malignant"]
        parts.append(f"a mass of up to 3-7 cm painted into a lung of {lesion['n']} normal "
                     f"test slices raised the "
                     f"share called malignant from {called['plain']:.0%} to "
                     f"{called['painted']:.0%}")
    if not parts:
        return None
    return ("What this model's heatmaps are worth, measured: " + "; ".join(parts)
            + ". The map shows what drove the score, which need not be the lesion.")
