"""Cached loaders: the only place the app touches ``st.cache_resource`` / ``st.cache_data``.

Models are loaded once per process and shared by every session; that is safe
because classification runs under ``torch.inference_mode`` without state, and
``lungct.explain`` serialises hook-based CAM work per model with a lock.
Per-input results are cached in memory only (never on disk), bounded in size
and time, keyed by the content of the input.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import streamlit as st

from lungct.app_support import case as case_mod
from lungct.app_support import catalog, comparison, experiments, heatmaps

RESULT_TTL_S = 1800
RESULT_ENTRIES = 16   # one entry is a whole upload (its decoded slices included)


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def classifier(key: str, folder: str, unsure_below: float):
    """A ``Classifier`` for the model in ``folder`` (``key`` changes when weights change);
    the default model is exported to ONNX on first use when missing, as ``make onnx`` does.

    ONNX Runtime classifies when ``model.onnx`` is there (``runtime.backend``);
    the PyTorch weights load on the first heatmap.
    """
    from lungct.config import load_config
    from lungct.inference import Classifier
    from lungct.training.first_use import ensure_model_export

    ensure_model_export(folder, load_config())   # the default, on first use after pip install
    return Classifier.from_name(folder, unsure_below)


@st.cache_data(ttl=20, show_spinner=False)
def entries(folder: str) -> list[catalog.ModelEntry]:
    """Model cards under ``folder``, re-read every 20 s (cards change while training)."""
    return catalog.list_entries(folder)


@st.cache_data(ttl=60, show_spinner=False)
def test_predictions(folder: str, key: str) -> dict | None:
    return catalog.test_predictions(folder)


@st.cache_data(ttl=600, show_spinner="Bootstrapping confidence intervals...")
def per_class_table(_entry: catalog.ModelEntry, key: str, folder: str):
    return comparison.per_class_table(_entry, catalog.test_predictions(folder))


@st.cache_resource(show_spinner="Loading the input check...", max_entries=2)
def guard(key: str, folder: str):
    """The input guard (``lungct.guard.InputGuard``), or None when not fitted; its ONNX
    extractor is built on first use when missing (``training.first_use.ensure_exports``)."""
    from lungct.guard import GuardLoadError, load_guard
    from lungct.training.first_use import ensure_exports
    try:
        loaded = load_guard(folder)
    except GuardLoadError:
        return None
    ensure_exports(loaded)
    return loaded


@st.cache_data(ttl=RESULT_TTL_S, max_entries=RESULT_ENTRIES, show_spinner="Classifying...")
def analyse(_classifier, key: str, files: tuple[tuple[str, bytes], ...], window: str,
            max_pixels: int, examples: bool, _guard=None,
            guard_key: str = "") -> list[case_mod.SliceResult]:
    return case_mod.analyse_files(_classifier, list(files), window, max_pixels, examples,
                                  guard=_guard)


class StudyView(NamedTuple):
    """What the Study page shows of an upload: its series, the classified one, the rest."""

    labels: list[str]
    chosen: int | None
    """Index of the classified series; None when the upload holds no readable image."""
    problems: list[tuple[str, str]]
    """(file name, reason) of unreadable files: the user's own screen only."""
    case: object | None
    """The ``lungct.pipeline.Case`` of the chosen series."""
    default: int | None = None
    """Index of the series shown when none is chosen (``Study.default``): choosing it again
    asks for ``series=None``, the result already cached."""


@st.cache_data(ttl=RESULT_TTL_S, max_entries=RESULT_ENTRIES,
               show_spinner="Reading and classifying the series...")
def study_case(_classifier, key: str, files: tuple[tuple[str, bytes], ...], series: int | None,
               window: str, _guard=None, guard_key: str = "") -> StudyView:
    """The upload read once (``lungct.pipeline.series.load_study``: every file parsed once)
    and one series classified (``series``: its index; None: ``Study.default``)."""
    from lungct.pipeline import classify_series
    from lungct.pipeline.series import load_study

    study = load_study(list(files))
    chosen = study.pick(series)
    labels = [s.label() for s in study.series]
    problems = [(p.name, p.error) for p in study.problems]
    if chosen is None:
        return StudyView(labels, None, problems, None)
    case = classify_series(_classifier, chosen, _guard, window, study=study)
    return StudyView(labels, study.series.index(chosen), problems, case,
                     study.series.index(study.default()))


@st.cache_resource(show_spinner=False)
def heatmap_store() -> heatmaps.HeatmapStore:
    """The process's heatmaps (bounded; see ``lungct.app_support.heatmaps``)."""
    return heatmaps.HeatmapStore(max_entries=RESULT_ENTRIES * 4, ttl_s=RESULT_TTL_S)


def heatmap(model, key: str, result, method: str, target: str | None,
            layer: str | None, progress=None) -> tuple[np.ndarray, str | None]:
    """(heatmap, explained class) of ``lungct.explain.explain`` for a pipeline slice (its
    pixels and its one segmentation); the class is None for EigenCAM.

    ``progress``: ``heatmaps.progress_bar(...)`` for a bar while a slow method runs.
    """
    return heatmaps.heatmap(heatmap_store(), model, key, result.gray, method, target, layer,
                            progress, seg=result.seg)


@st.cache_resource(show_spinner="First use: importing the shipped models' training runs from "
                                "their cards...")
def shipped_runs(uri: str, _cfg: dict) -> tuple[str, ...]:
    """Import the shipped models' runs into the store at ``uri``, once per process."""
    return tuple(experiments.import_shipped_runs(_cfg))


@st.cache_resource(show_spinner=False)
def mlflow_client(uri: str):
    return experiments.client(uri)


@st.cache_data(ttl=30, show_spinner="Reading MLflow runs...")
def runs(uri: str, experiment: str):
    return experiments.list_runs(mlflow_client(uri), experiment)


@st.cache_data(ttl=30, show_spinner=False)
def metric_history(uri: str, run_ids: tuple[str, ...], key: str, _runs):
    return experiments.metric_history(mlflow_client(uri), _runs, key)
