"""Model comparison: test metrics with CIs, confusion, ROC, calibration, size and speed."""

import pandas as pd
import streamlit as st

from lungct import CLASSES
from lungct.app_support import cache, catalog, charts, comparison
from lungct.app_support.reference import PAPER_NOTE, leakage_reference
from lungct.app_support.report import to_uint8
from lungct.config import load_config
from lungct.explain import overlay
from lungct.preprocess import InvalidImageError, decode_image

cfg = load_config()
st.title("Model comparison")
all_entries = cache.entries(str(catalog.models_dir()))
if not all_entries:
    st.info("No model cards yet: train one with `python -m lungct train --name student_kd`, "
            "then `python -m lungct evaluate --model student_kd`.")
    st.stop()

protocol = st.radio("Protocol", list(comparison.PROTOCOLS), horizontal=True,
                    format_func=lambda p: comparison.PROTOCOLS[p], key="compare_protocol")
st.caption("Each model is tested only on its own protocol's test split: the other split's "
           "test images are in its training data. " + PAPER_NOTE)
table = comparison.comparison_table(all_entries, protocol, leakage_reference())
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="%.3f") for c in table.columns
    if table[c].dtype.kind == "f"})
st.plotly_chart(charts.headline_bars(table), key="headline")

evaluated = [e for e in all_entries if e.protocol == protocol and e.test_metrics]
if not evaluated:
    st.info(f"No {protocol}-protocol model is evaluated yet: run "
            "`python -m lungct evaluate --model NAME`.")
else:
    st.subheader("Per-class precision, recall and F1 (bootstrap 95% CIs)")
    long = pd.concat([cache.per_class_table(e, catalog.model_key(e), str(e.folder))
                      for e in evaluated])
    st.plotly_chart(charts.per_class_bars(long), key="per_class")

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
            roc_class), key="roc")
        right.plotly_chart(charts.reliability_figure(
            {n: comparison.reliability(p) for n, p in predictions.items()}), key="reliability")
    else:
        st.info("No test_predictions.json found: ROC and reliability curves need it "
                "(written by `python -m lungct evaluate`).")

st.subheader("Run every available model on one image")
runnable = catalog.runnable(all_entries)
name = st.selectbox("Example", ["none"] + catalog.list_samples(), key="compare_example")
if name == "none" or not runnable:
    st.caption("Pick an example to see every model's prediction and Grad-CAM side by side.")
    st.stop()
try:
    gray = decode_image(catalog.read_sample(name))
except InvalidImageError as err:
    st.error(str(err))
    st.stop()
columns = st.columns(len(runnable) + 1)
columns[0].image(to_uint8(gray), caption=name, width="stretch")
for column, e in zip(columns[1:], runnable):
    try:
        clf = cache.classifier(catalog.model_key(e), str(e.folder),
                               float(cfg["app"]["unsure_below"]))
        pred = clf.predict_gray(gray)
        heat, _ = cache.heatmap(clf.model, catalog.model_key(e), gray, "Grad-CAM", None, None)
    except Exception as err:  # one broken model must not hide the others
        column.error(f"{e.name} failed ({type(err).__name__}: {str(err)[:200]})")
        continue
    column.markdown(f"**{e.name}**: {pred.label}" + (" (unsure)" if pred.unsure else ""))
    column.plotly_chart(charts.probability_bar(pred.probabilities, clf.unsure_below, 160),
                        key=f"run_{e.name}")
    column.image(overlay(gray, heat), caption=f"Grad-CAM, {pred.label}", width="stretch")
