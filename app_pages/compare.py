"""Model comparison: test metrics with CIs, confusion, ROC, calibration, size and speed."""

import pandas as pd
import streamlit as st

from lungct import CLASSES
from lungct.app_support import cache, catalog, charts, comparison, findings_view, inputs
from lungct.app_support.reference import PAPER_NOTE, leakage_reference
from lungct.app_support.report import to_uint8
from lungct.config import load_config
from lungct.explain import overlay
from lungct.pipeline import reclassify

cfg = load_config()
st.title("Model comparison")
all_entries = cache.entries(str(catalog.models_dir()))
if not all_entries:
    st.info("No model cards yet: train one with `python -m lungct lab train --name student_kd`, "
            "then `python -m lungct lab evaluate --model student_kd`.")
    st.stop()

protocol = st.radio("Protocol", list(comparison.PROTOCOLS), horizontal=True,
                    format_func=lambda p: comparison.PROTOCOLS[p], key="compare_protocol")
st.caption("Each model is tested only on its own protocol's test split: the other split's "
           "test images are in its training data. " + PAPER_NOTE)
table = comparison.comparison_table(all_entries, protocol, leakage_reference())
shown = comparison.display_table(table)
for title, columns in comparison.DISPLAY_GROUPS.items():
    st.markdown(f"**{title}**")
    st.dataframe(shown[columns], hide_index=True)
st.download_button("Download the table (CSV, raw numbers)", table.to_csv(index=False),
                   f"lungct_models_{protocol}.csv", "text/csv", on_click="ignore")
st.plotly_chart(charts.headline_bars(table), key="headline")

evaluated = [e for e in all_entries if e.protocol == protocol and e.test_metrics]
colours = charts.model_colours(e.name for e in all_entries)  # the same colour in every chart
if not evaluated:
    st.info(f"No {protocol}-protocol model is evaluated yet: run "
            "`python -m lungct lab evaluate --model NAME`.")
else:
    st.subheader("Per-class precision, recall and F1 (bootstrap 95% CIs)")
    long = pd.concat([cache.per_class_table(e, catalog.model_key(e), str(e.folder))
                      for e in evaluated])
    st.plotly_chart(charts.per_class_bars(long, colours), key="per_class")

    st.subheader("Confusion matrices (test split)")
    columns = st.columns(min(len(evaluated), 3))
    for i, e in enumerate(evaluated):
        matrix = comparison.confusion_matrix(e)
        if matrix is not None:
            columns[i % len(columns)].plotly_chart(charts.confusion_heatmap(matrix, e.name),
                                                   key=f"cm_{e.name}")

    predictions = {e.name: cache.test_predictions(str(e.folder), catalog.model_key(e))
                   for e in evaluated}
    predictions = {k: v for k, v in predictions.items() if v is not None}
    if predictions:
        roc_class = st.selectbox("ROC class", CLASSES, index=CLASSES.index("malignant"))
        k = CLASSES.index(roc_class)
        left, right = st.columns(2)
        left.plotly_chart(charts.roc_figure(
            {n: comparison.roc_points(p["y_true"], p["probs"], k) for n, p in predictions.items()},
            roc_class, colours), key="roc")
        right.plotly_chart(charts.reliability_figure(
            {n: comparison.reliability(p) for n, p in predictions.items()}, colours),
            key="reliability")
    else:
        st.info("No test_predictions.json found: ROC and reliability curves need it "
                "(written by `python -m lungct lab evaluate`).")

st.subheader("Other hospitals' chest CT and where the heatmaps point")
external = comparison.external_table(all_entries)
if external.empty:
    st.info("No model card has external results yet: `python -m lungct lab external DIR "
            "--write-card` and `python -m lungct lab pointing --write-cards` add them.")
else:
    st.caption("Lung-PET-CT-Dx (two adenocarcinoma patients, Philips and Siemens DICOM), guard "
               "on: share of lung slices accepted, of tumour-box slices called malignant, and "
               "series verdicts. Heatmap columns: pointing game (maximum within 15 px of a "
               "tumour box) / share of the heatmap's energy inside the boxes (chance about 2%), "
               "for the class malignant. Painted mass: the model's normal test slices called "
               "malignant, plain and with a mass of up to 3-7 cm painted into a lung field, and the AUC "
               "of P(malignant) between the two (0.5: the mass plays no part). From `python -m "
               "lungct lab external`, `python -m lungct lab pointing` and `python -m lungct "
               "lesion-check`.")
    st.dataframe(external, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in ("lung slices accepted",
                                          "tumour-box slices called malignant",
                                          "other lung slices called malignant",
                                          "normal slices called malignant",
                                          "the same with a painted mass")})

found = findings_view.measured_table(findings_view.scorer_card())
st.caption("Findings layer (candidates of focal abnormal tissue, beside the heatmaps): top "
           "finding within 15 px of a tumour box (pointing game), sensitivity at 1 false "
           "finding per slice, false findings per Lung-PET-CT-Dx slice without a tumour and per "
           "IQ-OTH/NCCD normal test slice, tumour-vs-other AUC of the top score; fitted on one "
           "patient, reported on the other (`python -m lungct lab findings`).")
if found.empty:
    st.info("No findings scorer card: `python -m lungct lab findings --write` makes it.")
else:
    st.dataframe(found, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in ("pointing game", "sensitivity at 1 false/slice")})

rendering = comparison.rendering_table(all_entries)
if not rendering.empty:
    st.caption("The same test slices as other hospitals render them (guard off; "
               "`python -m lungct lab robustness`): accuracy and the share of normal slices "
               "called malignant, plain and per rendering. A model that keys on one "
               "hospital's export calls normal lung-window slices malignant.")
    st.dataframe(rendering, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in rendering.columns if ":" in c})

st.subheader("Run every available model on one image")
runnable = catalog.runnable(all_entries)
left, right = st.columns(2)
name = left.selectbox("Example", ["none"] + catalog.list_samples(), key="compare_example")
upload = right.file_uploader("...or upload one slice", type=None, key="compare_upload")
if (name == "none" and upload is None) or not runnable:
    st.caption("Pick an example or upload a slice to see every model's prediction and "
               "Grad-CAM side by side.")
    st.stop()
if upload is not None:
    name, data = inputs.upload_name(upload), upload.getvalue()
else:
    data = catalog.read_sample(name)
loaded = {}
for e in runnable:   # one broken model must not hide the others
    try:
        loaded[e.name] = cache.classifier(catalog.model_key(e), str(e.folder),
                                          float(cfg["app"]["unsure_below"]))
    except Exception as err:
        loaded[e.name] = err
first = next((e for e in runnable if not isinstance(loaded[e.name], Exception)), None)
if first is None:
    st.error("No model could be loaded.")
    st.stop()
# the Classify page's pipeline once (read, guard, segmentation, findings), then each model
result = inputs.one_result(loaded[first.name], catalog.model_key(first), data, name,
                           cfg["preprocess"]["dicom_window"],
                           int(cfg["preprocess"].get("max_pixels", 40_000_000)))
gray = result.gray
cells = [c for _ in range(0, len(runnable) + 1, 4) for c in st.columns(4)]
cells[0].image(to_uint8(gray), caption=name, width="stretch")
for column, e in zip(cells[1:], runnable):
    try:
        clf = loaded[e.name]
        if isinstance(clf, Exception):
            raise clf
        r = result if e is first else reclassify(result, clf)
        if not r.ok:
            raise RuntimeError(r.error or "no prediction")
        pred = r.prediction
        heat, _ = cache.heatmap(clf.model, catalog.model_key(e), r, "Grad-CAM", pred.label,
                                None)
    except Exception as err:  # one broken model must not hide the others
        column.error(f"{e.name} failed ({type(err).__name__}: {str(err)[:200]})")
        continue
    column.markdown(f"**{e.name}**: {pred.label}" + (" (unsure)" if pred.unsure else "")
                    + (" — caution" if r.caution else ""))
    column.image(overlay(gray, heat), caption=f"Grad-CAM, {pred.label}", width="stretch")
    column.plotly_chart(charts.probability_bar(pred.probabilities, clf.unsure_below, 160),
                        key=f"run_{e.name}")
