"""Home: what lungct is and is not, the active model and its test figures, credits."""

import streamlit as st

from lungct.app_support import sidebar
from lungct.app_support.catalog import NOT_EVALUATED
from lungct.app_support.comparison import summary_row
from lungct.app_support.reference import DATASET_CREDIT, DATASET_URL, DISCLAIMER

st.title("lungct: lung CT slice classification")
st.warning(f"**{DISCLAIMER}**", icon=":material/warning:")
st.markdown(
    "**What it does.** For each axial CT slice you upload (PNG, JPEG, TIFF, BMP or DICOM) "
    "it estimates the probability of three classes, *normal*, *benign* and *malignant*, "
    "flags uncertain results, and shows a Grad-CAM heatmap of the regions that drove the "
    "prediction. Several slices of one case get a case summary with the most suspicious "
    "slice first, and a downloadable report.\n\n"
    "**What it is not.** It is not a medical device and not a diagnosis. It sees single "
    "2-D slices from one public dataset of 110 patients from one hospital, so its figures "
    "say little about other scanners, protocols or populations. A heatmap shows where the "
    "model looked, not where disease is.")

entry = sidebar.active_entry()
st.subheader("Active model")
if entry is None:
    st.info("No model is available: train one with `python -m lungct lab train --name student_kd`.")
    st.stop()
st.markdown(f"**{entry.name}**: {entry.description or entry.card.get('arch', '')}")
row = summary_row(entry)
if entry.test_metrics is None:
    st.info(f"Test metrics: {NOT_EVALUATED}. Run `python -m lungct lab evaluate --model "
            f"{entry.name}` to compute them.")
else:
    n = f", {row['n_test']} slices" if row["n_test"] else ""
    st.caption(f"Test split of the **{entry.protocol}** protocol{n}; 95% bootstrap confidence "
               "intervals under the figures; probabilities calibrated by temperature scaling.")
    if entry.protocol != "grouped":
        st.warning("This model was evaluated on the paper's image-level split, where "
                   "near-duplicate slices of one patient sit in training and test; its "
                   "figures are optimistic. The grouped-protocol models give honest ones.")

    def show(column, label, value, lo, hi, help_text=None, percent=True):
        fmt = "{:.1%}" if percent else "{:.3f}"
        column.metric(label, "n/a" if value != value else fmt.format(value), help=help_text)
        if lo == lo and hi == hi:
            column.caption(f"95% CI {fmt.format(lo)} to {fmt.format(hi)}")

    nan = float("nan")
    cols = st.columns(4)
    show(cols[0], "Accuracy", row["accuracy"], row["accuracy_lo"], row["accuracy_hi"])
    show(cols[1], "Malignant recall", row["malignant_recall"], row["malignant_recall_lo"],
         row["malignant_recall_hi"], "Share of malignant test slices labelled malignant.")
    show(cols[2], "AUC (macro, one-vs-rest)", row["auc_macro"], nan, nan, percent=False)
    show(cols[3], "AUC malignant", row["auc_malignant"], nan, nan, percent=False)

st.subheader("Pages")
st.markdown(
    "**Radiologist** (the sidebar's model selector offers the patient-split models only)\n"
    "- **Home**: this page: what lungct is and is not, the active model's test figures.\n"
    "- **Classify**: upload slices (or try an example) for labels, probabilities, heatmaps, "
    "a case summary and a report.\n"
    "- **Study**: a whole series (DICOM files or a .zip) as one case: slice by slice with "
    "window presets, P(malignant) along the series, findings, the verdict and its rule, "
    "CSV and PDF exports.\n"
    "- **PACS**: find a study on a DICOMweb server, classify its CT series and, once "
    "confirmed, store the result (DICOM SR and PDF) back into the study.\n"
    "- **Grad-CAM**: one slice under every CAM method, for each class and target layer.\n\n"
    "**Research**\n"
    "- **Model comparison**: test metrics with confidence intervals, confusion matrices, "
    "ROC and calibration of every model (the paper-protocol models too), beside the "
    "paper's published figures and a leakage probe.\n"
    "- **Experiments**: MLflow training runs and learning curves.")
st.subheader("Data")
st.markdown(f"Models are trained on the {DATASET_CREDIT} [{DATASET_URL}]({DATASET_URL})")
