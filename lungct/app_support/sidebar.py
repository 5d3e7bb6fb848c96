"""The model selector every page shares, and the active model it selects."""

from __future__ import annotations

import streamlit as st

from lungct.app_support import cache, catalog
from lungct.app_support.reference import DISCLAIMER
from lungct.config import load_config

MODEL_KEY = "model_name"


def model_selector(cfg: dict | None = None) -> str | None:
    """Sidebar select box of the models a clinician may run (``catalog.clinical``: no
    research-protocol model); its choice lives in ``st.session_state``."""
    cfg = cfg or load_config()
    folder = catalog.models_dir()
    all_entries = cache.entries(str(folder))
    names = [e.name for e in catalog.clinical(all_entries)]
    with st.sidebar:
        if not names:
            st.warning(f"No model with weights in `{folder}`. Train one with "
                       "`python -m lungct lab train --name student_kd`.")
            return None
        if st.session_state.get(MODEL_KEY) not in names:
            st.session_state[MODEL_KEY] = catalog.default_model(
                all_entries, cfg["app"]["default_model"])
        st.selectbox("Model", names, key=MODEL_KEY,
                     help="Used by Classify, Study, PACS and Grad-CAM. Research models "
                          "(the paper's leaky image-level split, `*_paper`) and models whose "
                          "weights are not shipped (e.g. VGG16) appear on the comparison "
                          "page only.")
        entry = active_entry(cfg)
        if entry is not None:
            st.caption(f"{entry.description or entry.card.get('arch', '')} "
                       f"(protocol: {entry.protocol})")
        st.caption(DISCLAIMER)
    return st.session_state[MODEL_KEY]


def active_entry(cfg: dict | None = None) -> catalog.ModelEntry | None:
    """The selected model's entry (a clinical one); the default model when nothing valid is
    selected.

    The fallback matters when a page runs without the entry point (AppTest's
    ``switch_page``) or when the selected model disappeared from the folder.
    """
    all_entries = cache.entries(str(catalog.models_dir()))
    by_name = {e.name: e for e in catalog.clinical(all_entries)}
    name = st.session_state.get(MODEL_KEY)
    if name not in by_name:
        name = catalog.default_model(all_entries, (cfg or load_config())["app"]["default_model"])
    return by_name.get(name)


def active_classifier(cfg: dict):
    """(Classifier, entry) of the selected model; shows an error and stops when impossible."""
    entry = active_entry(cfg)
    if entry is None:
        st.info("No model is available: train one with "
                "`python -m lungct lab train --name student_kd`.")
        st.stop()
    return load_classifier(entry, cfg), entry


def load_classifier(entry: catalog.ModelEntry, cfg: dict):
    """The cached Classifier of ``entry``; a load failure is shown and stops the page."""
    from lungct.models import ModelLoadError
    try:
        return cache.classifier(catalog.model_key(entry), str(entry.folder),
                                float(cfg["app"]["unsure_below"]))
    except ModelLoadError as err:
        st.error(f"Model {entry.name} could not be loaded: {err}")
        st.stop()
