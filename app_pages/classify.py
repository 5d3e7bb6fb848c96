"""Classify: upload CT slices (or try an example) -> label, probabilities, heatmap, case summary.

Files are named on screen only by their position and extension ("File 2 of 5 (.dcm)"):
file names and DICOM tags can identify a patient and are never shown or kept.
Uploaded bytes stay in memory.
"""

import streamlit as st

from lungct import CLASSES
from lungct.app_support import cache, catalog, findings_view, heatmaps, sidebar
from lungct.app_support.case import (ACCEPTED_HELP, WINDOW_CHOICES, WINDOW_HELP,
                                     below_threshold_note, case_csv, case_table, case_verdict,
                                     most_suspicious_first, probabilities_text)
from lungct.app_support.charts import probability_bar
from lungct.app_support.reference import DISCLAIMER
from lungct.app_support.report import build_report, results_caution, to_uint8
from lungct.config import load_config
from lungct.app_support.study import compose, lung_outline
from lungct.explain import CAM_METHODS, FAST_METHODS, caption

ALL_EXAMPLES = "all examples (as one case)"
INJECTED = "classify_files"  # (name, bytes) pairs placed here by tests or integrations

cfg = load_config()
st.title("Classify CT slices")
st.caption(DISCLAIMER)
clf, entry = sidebar.active_classifier(cfg)

uploads = st.file_uploader(
    "CT slices of one case", type=None, accept_multiple_files=True,
    help=f"{ACCEPTED_HELP}; up to 50 MB each. Nothing is written to disk.")
samples = catalog.list_samples()
example = st.selectbox("...or try an example", ["none"] + samples + [ALL_EXAMPLES],
                       key="classify_example")

with st.expander("Display and heatmap options", expanded=True):
    c1, c2, c3, c4, c5 = st.columns(5)
    window = c1.selectbox("DICOM window", WINDOW_CHOICES, key="classify_window",
                          index=WINDOW_CHOICES.index(cfg["preprocess"]["dicom_window"]),
                          help=WINDOW_HELP)
    method = c2.selectbox("Heatmap method", list(CAM_METHODS), key="classify_method",
                          format_func=lambda m: (m if m in FAST_METHODS
                                                 else heatmaps.slow_note(m, entry.name)),
                          help="EigenCAM, AblationCAM and ScoreCAM are gradient-free.")
    target = c3.selectbox("Explain class", ["predicted"] + list(CLASSES), key="classify_target")
    opacity = c4.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="classify_opacity")
    outline = c5.toggle("Lung outline", value=False, key="classify_outline",
                        help="The lung fields the models look at (lungct.lungs): "
                             "the crop and the body mask come from this segmentation.")

examples = False
if uploads:
    files = tuple((f.name, f.getvalue()) for f in uploads)
elif st.session_state.get(INJECTED):
    files = tuple(st.session_state[INJECTED])
elif example != "none":
    names = samples if example == ALL_EXAMPLES else [example]
    files, examples = tuple((n, catalog.read_sample(n)) for n in names), True
else:
    st.info("Upload one or more slices, or pick an example.")
    st.stop()

guard = cache.guard(catalog.guard_key(), str(catalog.guard_folder()))
results = cache.analyse(clf, catalog.model_key(entry), files, window,
                        int(cfg["preprocess"].get("max_pixels", 40_000_000)), examples,
                        guard, catalog.guard_key())
if guard is None:
    st.caption("The input check (is each file a lung CT slice?) is not installed: "
               "`python -m lungct guard fit` makes it.")
target_class = None if target == "predicted" else target
overlays = {}

verdict = case_verdict(results)
if len(results) > 1:
    st.subheader("Case summary")
    if verdict:
        flag = " (unsure: review carefully)" if verdict["unsure"] else ""
        st.markdown(f"**Case verdict: {verdict['label']}**{flag}  \nRule: {verdict['rule']}. "
                    f"Deciding slice: {verdict['deciding_slice']}.")
    st.dataframe(case_table(results), hide_index=True)
    st.download_button("Download case table (CSV)", case_csv(results, entry.name),
                       "lungct_case.csv", "text/csv", on_click="ignore")

if caution := results_caution(results):
    st.warning(f"Caution: {caution}")
report_slot = st.empty()
if note := heatmaps.what_it_shows(clf.card, method):
    st.caption(note)
if any(r.findings is not None for r in results):
    st.caption(findings_view.CAPTION)
for r in most_suspicious_first(results):
    with st.container(border=True):
        st.markdown(f"#### {r.title}")
        if r.outside_lungs:
            st.info(f"{r.title}: {r.error}")
            st.image(to_uint8(r.gray), caption="outside the lungs: not classified", width=240)
            continue
        if r.rejected:
            st.warning(f"{r.title}: {r.error}")
            st.image(to_uint8(r.gray), caption="not classified", width=240)
            continue
        if not r.ok:
            st.error(f"{r.title} could not be classified: {r.error}")
            continue
        pred = r.prediction
        lungs = lung_outline(r.seg) if outline and r.seg is not None else None
        with st.spinner(f"{method} heatmap..."):
            try:
                # the shown label is explained (ONNX may have computed it)
                heat, explained = cache.heatmap(clf.model, catalog.model_key(entry), r,
                                                method, target_class or pred.label, None,
                                                heatmaps.progress_bar(st, method, entry.name))
                overlays[r.position] = compose(r.gray, lungs, heat, opacity)
            except Exception as err:  # a heatmap failure must not hide the label
                explained = None
                st.error(f"Heatmap failed ({type(err).__name__}); the label is unaffected.")
        left, mid, found, right = st.columns([1, 1, 1, 1.2])
        left.image(compose(r.gray, lungs) if lungs is not None else to_uint8(r.gray),
                   caption="slice" + (" with lung outline" if outline else ""), width="stretch")
        if r.position in overlays:
            mid.image(overlays[r.position], caption=caption(method, explained), width="stretch")
        if r.findings is not None:
            found.image(findings_view.draw(r.gray, r.findings), width="stretch",
                        caption="Findings: " + findings_view.summary(r.findings))
        right.metric("Label", pred.label,
                     help=f"model {entry.name}, computed with {pred.backend or 'torch'}")
        right.markdown(probabilities_text(pred.probabilities))
        top = max(pred.probabilities.values())
        if note := below_threshold_note(pred):
            right.warning(note)
        elif pred.unsure and top < clf.unsure_below:
            right.warning(f"Unsure: top probability {top:.2f} is below "
                          f"{clf.unsure_below:.2f}. Review this slice carefully.")
        if r.warning:
            right.warning(r.warning)
        right.plotly_chart(probability_bar(pred.probabilities, clf.unsure_below),
                           key=f"probs_{r.position}")
        if right.button("Open in the Grad-CAM page", key=f"to_cam_{r.position}"):
            name, data = files[r.position - 1]
            st.session_state["gradcam_input"] = {
                "data": data, "name": name if examples else "upload" + r.extension,
                "title": r.title, "window": window}
            st.session_state["gradcam_source"] = "from the Classify page"
            st.switch_page("app_pages/gradcam.py")

html = build_report(results, entry.name, entry.version(), overlays, method,
                    target if target_class else "predicted class")
report_slot.download_button("Download case report (HTML, no patient data)", html.encode("utf-8"), "lungct_report.html",
                   "text/html", on_click="ignore", type="primary")
