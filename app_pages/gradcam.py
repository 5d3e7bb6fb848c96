"""Grad-CAM: one slice under every CAM method, for each class and a chosen target layer."""

import streamlit as st

from lungct import CLASSES
from lungct.app_support import cache, catalog, findings_view, heatmaps, inputs, sidebar
from lungct.app_support.case import ACCEPTED_HELP, WINDOW_CHOICES, WINDOW_HELP
from lungct.app_support.report import png_bytes, to_uint8
from lungct.config import load_config
from lungct.explain import CAM_METHODS, CLASS_AGNOSTIC, FAST_METHODS, SLOW_METHODS, caption, overlay
from lungct.models import cam_target_layers

cfg = load_config()
st.title("Grad-CAM explorer")
st.caption("Heatmaps show which regions drove the model's score for a class. They are not "
           "segmentations and do not locate disease.")
clf, entry = sidebar.active_classifier(cfg)

carried = st.session_state.get("gradcam_input")
sources = (["from the Classify page"] if carried else []) + ["example", "upload"]
source = st.radio("Image", sources, horizontal=True, key="gradcam_source")
if source == "from the Classify page":
    data, name, window = carried["data"], carried["name"], carried["window"]
    st.caption(carried["title"])
elif source == "example":
    name = st.selectbox("Example", catalog.list_samples(), key="gradcam_example")
    data, window = catalog.read_sample(name), cfg["preprocess"]["dicom_window"]
else:
    upload = st.file_uploader("One CT slice", type=None, help=ACCEPTED_HELP)
    if upload is None:
        st.info("Upload a slice, or choose an example.")
        st.stop()
    data = upload.getvalue()
    window = st.selectbox("DICOM window", WINDOW_CHOICES, help=WINDOW_HELP,
                          index=WINDOW_CHOICES.index(cfg["preprocess"]["dicom_window"]))
    name = inputs.upload_name(upload)

# the Classify page's pipeline: the same guard check, caution and findings for the same file
result = inputs.one_result(clf, catalog.model_key(entry), data, name, window,
                           int(cfg["preprocess"].get("max_pixels", 40_000_000)))
gray, pred = result.gray, result.prediction
layers = list(cam_target_layers(clf.model))
c1, c2, c3, c4 = st.columns(4)
target = c1.selectbox("Explain class", CLASSES, index=CLASSES.index(pred.label),
                      help="Defaults to the predicted class.")
layer = c2.selectbox("Target layer", layers, help="The first one is the recommended layer.")
opacity = c3.slider("Opacity", 0.0, 1.0, 0.45, 0.05)
slow = c4.checkbox("Also the slow methods", help="; ".join(
    heatmaps.slow_note(m, entry.name) for m in SLOW_METHODS))
st.markdown(f"Prediction of **{entry.name}**: **{pred.label}** "
            f"({', '.join(f'{c} {p:.3f}' for c, p in pred.probabilities.items())})"
            + (" — *unsure*" if pred.unsure else "")
            + (" — **caution: unlike what the model was validated on**"
               if result.caution else ""))
if result.warning:
    st.warning(result.warning)
if note := heatmaps.what_it_shows(clf.card, "Grad-CAM"):
    st.caption(note)
st.caption(findings_view.CAPTION)


def show(column, method: str, cls: str, caption: str, key: str) -> None:
    try:
        heat, _ = cache.heatmap(clf.model, catalog.model_key(entry), result, method, cls, layer,
                                heatmaps.progress_bar(column, method, entry.name))
    except Exception as err:  # one method failing must not hide the others
        column.error(f"{method} failed ({type(err).__name__})")
        return
    image = overlay(gray, heat, opacity)
    column.image(image, caption=caption, width="stretch")
    column.download_button("PNG", png_bytes(image, max_side=1024), f"{key}.png", "image/png",
                           key=key, on_click="ignore")


st.subheader(f"Every method, class {target}")
methods = list(FAST_METHODS) + ([m for m in CAM_METHODS if m not in FAST_METHODS] if slow else [])
columns = st.columns(len(methods) + 2)
columns[0].image(to_uint8(gray), caption="slice", width="stretch")
columns[1].image(findings_view.draw(gray, result.findings), width="stretch",
                 caption="Findings: " + (findings_view.summary(result.findings) or "not run"))
for column, method in zip(columns[2:], methods):
    with column, st.spinner(method):
        show(column, method, target, caption(method, target), f"cam_{method}_{target}")

st.subheader("Each class, one method")
method = st.selectbox("Method", list(CAM_METHODS), key="gradcam_class_method",
                      format_func=lambda m: m if m in FAST_METHODS else f"{m} (slow)")
if method in CLASS_AGNOSTIC:
    st.info(f"{method} shows the same map for every class (the first principal component "
            "of the layer's activations); see it above.")
    st.stop()
for column, cls in zip(st.columns(len(CLASSES)), CLASSES):
    with column, st.spinner(cls):
        show(column, method, cls, f"{cls} (p = {pred.probabilities[cls]:.3f})",
             f"class_{method}_{cls}")
