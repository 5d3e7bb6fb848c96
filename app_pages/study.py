"""Study: a whole series (DICOM files, a folder's files or a .zip) as one case, slice by slice.

File names are shown here, in the user's own session, and nowhere else: the CSV
and PDF exports carry slice positions only. Uploaded bytes stay in memory.
"""

import streamlit as st

from lungct.app_support import cache, catalog, findings_view, sidebar, study
from lungct.app_support.case import below_threshold_note, probabilities_text
from lungct.app_support.reference import DISCLAIMER
from lungct.app_support.report import results_caution
from lungct.pipeline import ACCEPTED_HELP
from lungct.pipeline.report import case_pdf
from lungct.config import load_config
from lungct.explain import FAST_METHODS

INJECTED = "study_files"  # (name, bytes) pairs placed here by tests or integrations

cfg = load_config()
st.title("Study view")
st.caption(DISCLAIMER)
clf, entry = sidebar.active_classifier(cfg)
uploads = st.file_uploader("A series: DICOM files (select all files of a folder) or one .zip",
                           accept_multiple_files=True, type=None,
                           help=f"{ACCEPTED_HELP}, or a .zip of them. Nothing is written to disk.")
if uploads:
    files = tuple((f.name, f.getvalue()) for f in uploads)
elif st.session_state.get(INJECTED):
    files = tuple(st.session_state[INJECTED])
else:
    st.info("Upload the slices of one series (or a .zip of a study).")
    st.stop()
guard = cache.guard(catalog.guard_key(), str(catalog.guard_folder()))
picked = st.session_state.get("study_series_pick")   # (upload digest, series index)
digest = hash(files)
try:   # read and classified once per upload and series, every file parsed once
    view = cache.study_case(clf, catalog.model_key(entry), files,
                            picked[1] if picked and picked[0] == digest else None,
                            cfg["preprocess"]["dicom_window"], guard, catalog.guard_key())
except ValueError as err:   # StudyLimitError: too many files or bytes
    st.error(str(err))
    st.stop()
if view.problems:
    with st.expander(f"{len(view.problems)} files could not be used"):
        st.dataframe([{"file": n, "reason": e} for n, e in view.problems], hide_index=True)
if view.chosen is None:
    st.error("No readable image in the upload.")
    st.stop()
chosen = st.selectbox("Series", range(len(view.labels)), index=view.chosen,
                      format_func=view.labels.__getitem__,
                      help="Default: the axial series with the most slices, lung kernel first.")
if chosen != view.chosen:   # the default series again: the cached default result (None)
    st.session_state["study_series_pick"] = (digest, None if chosen == view.default else chosen)
    st.rerun()
case = view.case

verdict, counts = case.verdict, case.counts
st.markdown(f"**Case verdict: {case.label}**"
            + (" (unsure: review carefully)" if verdict and verdict["unsure"] else "")
            + f"  \nRule: {verdict['rule'] if verdict else 'no slice could be classified'}")
caution = results_caution(case.slices)   # every slice's caution, not only lung-window ones
if caution:
    st.warning(caution[:1].upper() + caution[1:])
c1, c2, c3, c4 = st.columns(4)
c1.metric("classified", counts["classified"])
c2.metric("outside the lungs", counts["outside_lungs"])
c3.metric("refused", counts["refused"])
c4.metric("unreadable", counts["error"])

n = len(case.slices)
if "study_slice" not in st.session_state or st.session_state["study_slice"] > n:
    st.session_state["study_slice"] = verdict["deciding_position"] if verdict else 1
profile = st.plotly_chart(study.profile_figure(case, st.session_state["study_slice"]),
                          on_select="rerun", selection_mode="points", key="study_profile")
points = (profile or {}).get("selection", {}).get("points", []) if profile else []
if points and points[0].get("customdata") is not None:
    st.session_state["study_slice"] = int(points[0]["customdata"])
with_findings = [s.position for s in case.slices if s.findings]
index = st.slider("Slice (feet to head)", 1, n, key="study_slice") if n > 1 else 1
if with_findings:   # the slider's marks: where the findings are
    st.caption("Slices with findings (◆ on the profile): "
               + ", ".join(f"**{p}**" if p == index else str(p) for p in with_findings))
r = case.slices[index - 1]

left, right = st.columns([1.4, 1])
with right:
    presets = ["as classified", *study.WL_PRESETS, "custom"]
    wl = st.radio("Window", presets, horizontal=True, key="study_wl", disabled=r.hu is None,
                  help="Display only, in Hounsfield units: the model's input does not change.")
    width, level = study.WL_PRESETS.get(wl, (1500.0, -600.0))
    if wl == "custom":
        width = st.number_input("Width (HU)", 1.0, 4000.0, 1500.0, 50.0)
        level = st.number_input("Level (HU)", -1500.0, 1500.0, -600.0, 50.0)
    show_outline = st.toggle("Lung outline", key="study_outline")
    show_findings = st.toggle("Findings", value=True, key="study_findings",
                              disabled=r.findings is None)
    show_heat = st.toggle("Heatmap (Grad-CAM)", key="study_heat", disabled=not r.ok)
    st.markdown(f"**{r.where}** - {r.name}")
    if r.ok:
        st.markdown(f"Label: **{r.prediction.label}**" + (" (unsure)" if r.prediction.unsure
                                                          else ""))
        st.markdown(probabilities_text(r.prediction.probabilities))
        if note := below_threshold_note(r.prediction, case.threshold):
            st.caption(note)
        if r.findings is not None:
            st.markdown(f"Findings: {findings_view.summary(r.findings)}")
        if r.warning:
            st.warning(r.warning)
    else:
        st.warning(f"{r.status.replace('_', ' ')}: {r.error}")
with left:
    if r.gray is None:
        st.error("This slice has no image to show.")
    else:
        shown_hu = None
        if wl != "as classified":   # the slice's own HU (a file or a .zip member alike)
            shown_hu = study.display(r, width, level)
            if shown_hu is None:
                st.caption("Window presets need a CT DICOM slice (Hounsfield units); this "
                           "image is shown as classified.")
        image = shown_hu if shown_hu is not None else r.gray
        heat = None
        if show_heat and r.ok:
            with st.spinner("Grad-CAM..."):
                heat, _ = cache.heatmap(clf.model, catalog.model_key(entry), r, "Grad-CAM",
                                        r.prediction.label, None)
        outline = study.lung_outline(r.seg) if show_outline and r.seg is not None else None
        if heat is not None and heat.shape != image.shape:
            image = r.gray
        shown = study.compose(image, outline, heat)
        if show_findings and r.findings:
            shown = findings_view.draw(shown, r.findings)
        st.image(shown, width="stretch",
                 caption=f"{r.where}" + (f", window W{width:g}/L{level:g}"
                                         if shown_hu is not None else ""))

if case.lesions is not None:
    st.subheader("Findings by slice position")
    st.caption(findings_view.CAPTION + " Select a row to show its slice.")
    if case.lesions.get("note"):
        st.caption(case.lesions["note"])
    found = findings_view.table(case.slices)
    if found.empty:
        st.info("No findings on the classified slices of this series.")
    else:
        def _jump() -> None:
            rows = st.session_state["study_found"].selection.rows
            if rows:
                st.session_state["study_slice"] = int(found.iloc[rows[0]]["slice"])

        st.dataframe(found, hide_index=True, on_select=_jump, selection_mode="single-row",
                     key="study_found")

st.subheader("Most suspicious slices first")
st.dataframe(study.session_table(case, top=10), hide_index=True)
d1, d2 = st.columns(2)
d1.download_button("Case table (CSV, positions only)", study.export_csv(case),
                   "lungct_study.csv", "text/csv", on_click="ignore")
d2.download_button("Case report (PDF, no patient data)", case_pdf(case.as_dict(), entry.card),
                   "lungct_study_report.pdf", "application/pdf", on_click="ignore")
st.caption(f"Other heatmap methods ({', '.join(FAST_METHODS)}, ...) are on the Grad-CAM page. "
           f"Model {entry.name}.")
