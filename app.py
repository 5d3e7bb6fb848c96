"""lungct: decision support for lung CT slices (normal / benign / malignant) with Grad-CAM.

Run with ``streamlit run app.py``. Pages live in ``pages/``; their logic in
``lungct.app_support``. The sidebar's model selector is shared by every page.
"""

import streamlit as st

from lungct.app_support import sidebar
from lungct.config import load_config

st.set_page_config(page_title="lungct", page_icon=":material/pulmonology:", layout="wide")

pages = {
    "Radiologist": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/classify.py", title="Classify", icon=":material/radiology:"),
        st.Page("pages/gradcam.py", title="Grad-CAM", icon=":material/visibility:"),
    ],
    "Research": [
        st.Page("pages/compare.py", title="Model comparison", icon=":material/leaderboard:"),
        st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
    ],
}
navigation = st.navigation(pages)
sidebar.model_selector(load_config())
navigation.run()
