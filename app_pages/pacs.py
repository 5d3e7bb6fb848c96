"""PACS: search a DICOMweb server, classify a CT series, store the result back into its study.

Studies are listed by UID and counts only; patient identifiers are never shown.
The server URL comes from params.yaml (pacs.url) or LUNGCT_PACS_URL; credentials
only from the environment (LUNGCT_PACS_USER / LUNGCT_PACS_PASSWORD).
"""

import streamlit as st

from lungct.app_support import cache, catalog, sidebar
from lungct.app_support.reference import DISCLAIMER
from lungct.config import load_config
from lungct.pacs.client import PacsClient, PacsError, pacs_settings
from lungct.pacs.workflow import STORE_KINDS, run_on_study

cfg = load_config()
st.title("PACS")
st.caption(DISCLAIMER)
clf, entry = sidebar.active_classifier(cfg)
url = st.text_input("DICOMweb URL", pacs_settings(cfg)["url"],
                    help="`make pacs` starts a local Orthanc with a demo study.")
try:
    client = PacsClient.from_config(cfg, url)
    studies = client.studies()
except PacsError as err:
    st.error(str(err))
    st.stop()
if not studies:
    st.info("No study on this server.")
    st.stop()
study = st.selectbox("Study", studies, key="pacs_study", format_func=lambda s: (
    f"{s['study_uid']} ({'/'.join(s['modalities'])}, {s['series']} series, "
    f"{s['instances']} instances)"))
try:
    series = client.series(study["study_uid"])
except PacsError as err:
    st.error(str(err))
    st.stop()
ct = [s for s in series if s["modality"] == "CT"]
pick = st.selectbox("Series", [None] + ct, format_func=lambda s: "default CT series" if s is None
                    else f"#{s['number']} {s['description']} ({s['instances']} instances)")
store = st.multiselect("Store back into the study", STORE_KINDS, default=list(STORE_KINDS),
                       format_func={"sr": "DICOM SR", "pdf": "Encapsulated PDF"}.get)
if st.button("Classify the series", type="primary"):
    guard = cache.guard(catalog.guard_key(), str(catalog.guard_folder()))
    with st.spinner("Retrieving and classifying..."):
        try:
            run = run_on_study(client, study["study_uid"], clf, guard,
                               pick["series_uid"] if pick else None, tuple(store),
                               cfg["preprocess"]["dicom_window"], entry.card, cfg)
        except PacsError as err:
            st.error(str(err))
            st.stop()
    c = run.case.counts
    st.success(f"Case verdict: {run.case.label}. {c['classified']} classified, "
               f"{c['outside_lungs']} outside the lungs, {c['refused']} refused, "
               f"{c['error']} unreadable. Stored: {', '.join(sorted(run.stored)) or 'nothing'}.")
    st.caption(run.case.verdict["rule"])
    st.dataframe([s for s in run.case.as_dict()["slices"]], hide_index=True)
