"""PACS: search a DICOMweb server, classify a CT series, store the result back into its study.

Studies are listed by date, description, modalities and counts; patient
identifiers are never shown. Storing writes into the PACS, so it needs an
explicit confirmation; a rerun is stored as the next run of the result, or
replaces the earlier one on an Orthanc when the user asks for it. The server URL
comes from params.yaml (pacs.url) or LUNGCT_PACS_URL; credentials only from the
environment (LUNGCT_PACS_USER / LUNGCT_PACS_PASSWORD).
"""

import streamlit as st

from lungct.app_support import cache, catalog, pacs_view, sidebar
from lungct.app_support.reference import DISCLAIMER
from lungct.config import load_config
from lungct.pacs.client import PacsClient, PacsError, pacs_settings
from lungct.pacs.workflow import STORE_KINDS, earlier_results, run_on_study

cfg = load_config()
st.title("PACS")
st.caption(DISCLAIMER)
clf, entry = sidebar.active_classifier(cfg)
url = st.text_input("DICOMweb URL", pacs_settings(cfg)["url"],
                    help="`make pacs` starts a local Orthanc with a demo study.")
try:
    with st.spinner(f"Contacting {url}..."):
        client = PacsClient.from_config(cfg, url)
        studies = client.studies()
except PacsError as err:
    st.error(str(err))
    st.stop()
if not studies:
    st.info("No study on this server.")
    st.stop()
study = st.selectbox("Study", studies, key="pacs_study", format_func=pacs_view.study_label)
study_uid = study["study_uid"]
try:
    with st.spinner("Listing the study's series..."):
        series = client.series(study_uid)
        earlier = earlier_results(client, study_uid, series)
except PacsError as err:
    st.error(str(err))
    st.stop()
ct = [s for s in series if s["modality"] == "CT"]
pick = st.selectbox("Series", [None] + ct, format_func=pacs_view.series_label)
store = st.multiselect("Store back into the study", STORE_KINDS, default=list(STORE_KINDS),
                       format_func={"sr": "DICOM SR", "pdf": "Encapsulated PDF"}.get)
confirmed = st.checkbox(f"Yes, write the result into this study on {client.url}",
                        key=f"pacs_confirm_{study_uid}",
                        help="Storing adds series to the PACS, where others will see them.")
replace = False
if earlier and store:
    last = max(e["version"] for e in earlier)
    if client.orthanc_root():
        replace = st.checkbox(f"Delete lungct's earlier result (up to run {last}) once the "
                              "new one is stored", key=f"pacs_replace_{study_uid}",
                              disabled=not confirmed)
    st.caption(f"This study already holds lungct results (up to run {last}); "
               f"a new one is stored as run {last + 1}.")
store_now = tuple(store) if confirmed else ()
label = "Classify and store" if store_now else "Classify only (nothing is stored)"
if st.button(label, type="primary", key="pacs_run"):
    guard = cache.guard(catalog.guard_key(), str(catalog.guard_folder()))
    with st.spinner("Retrieving and classifying..."):
        try:
            run = run_on_study(client, study_uid, clf, guard,
                               pick["series_uid"] if pick else None, store_now,
                               cfg["preprocess"]["dicom_window"], entry.card, cfg,
                               replace=replace)
        except PacsError as err:
            st.error(str(err))
            st.stop()
    kind, text = pacs_view.verdict_banner(run.case)
    (st.warning if kind == "warning" else st.info)(text)
    st.caption(run.case.as_dict()["rule"])
    st.caption(pacs_view.stored_text(run))
    st.dataframe(pacs_view.slice_table(run.case), hide_index=True)
