"""lungct: decision support for lung CT slices (normal / benign / malignant) with Grad-CAM.

Run with ``streamlit run app.py``. Pages live in ``app_pages/``; their logic in
``lungct.app_support``. The sidebar's model selector is shared by every page.

Why not ``pages/``: Streamlit treats a folder of that name as the old multipage
style and, until this entry point has called ``st.navigation`` once in the
process, runs a deep-linked page (``/classify``) without it: no sidebar, no
page titles. AppTest re-detects the folder on every run, likewise.
"""

import streamlit as st

from lungct.app_support import memory, sidebar
from lungct.config import load_config

memory.tune_allocator()  # once per process: freed heatmap buffers go back to the system

st.set_page_config(page_title="lungct", page_icon=":material/pulmonology:", layout="wide")

pages = {
    "Radiologist": [
        st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("app_pages/classify.py", title="Classify", icon=":material/radiology:"),
        st.Page("app_pages/study.py", title="Study", icon=":material/stacks:"),
        st.Page("app_pages/pacs.py", title="PACS", icon=":material/cloud_sync:"),
        st.Page("app_pages/gradcam.py", title="Grad-CAM", icon=":material/visibility:"),
    ],
    "Research": [
        st.Page("app_pages/compare.py", title="Model comparison", icon=":material/leaderboard:"),
        st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:"),
    ],
}
navigation = st.navigation(pages)
sidebar.model_selector(load_config())
try:
    navigation.run()
finally:  # st.stop() ends a page by raising
    memory.release_freed()
