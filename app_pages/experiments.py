"""Experiments: browse MLflow training runs, compare their parameters, plot learning curves."""

import streamlit as st

from lungct.app_support import cache, charts
from lungct.app_support import experiments as exp
from lungct.config import load_config
from lungct.training.tracking import tracking_uri

cfg = load_config()
st.title("Experiments")
uri = tracking_uri(cfg)
name = cfg.get("tracking", {}).get("experiment", "lungct")
st.caption(f"MLflow store `{uri}`, experiment `{name}`. Set `MLFLOW_TRACKING_URI` to read "
           "another store; `mlflow ui --backend-store-uri <store>` offers the full browser.")

EMPTY = (f"No training runs recorded yet. Train a model to log one:\n\n"
         f"```\n{exp.TRAIN_COMMAND}\n```")
try:
    if not exp.store_exists(uri) or cache.runs(uri, name).empty:
        imported = cache.shipped_runs(uri, cfg)  # first use: the shipped models' own runs
        cache.runs.clear()
        if imported:
            st.caption(f"Imported on first use from the model cards (tag imported_from_card): "
                       f"{', '.join(imported)}.")
    runs = cache.runs(uri, name) if exp.store_exists(uri) else None
except Exception as err:  # unreadable or foreign store
    st.error(f"The MLflow store could not be read ({type(err).__name__}: {str(err)[:200]}).")
    st.stop()
if runs is None or runs.empty:
    st.info(EMPTY)
    st.stop()

models = sorted(runs["model_name"].dropna().unique())
chosen = st.multiselect("Models (tag model_name)", models, default=models,
                        key="experiments_models")
shown = exp.filter_runs(runs, chosen)
if shown.empty:
    st.info("No run matches the chosen models.")
    st.stop()
all_params = st.toggle("Show all parameters (default: only those that differ)", value=False)
st.dataframe(exp.compare_table(shown, all_params), hide_index=True)

st.subheader("Learning curves")
keys = exp.curve_metrics(shown)
if not keys:
    st.info("These runs logged no per-epoch metrics.")
    st.stop()
key = st.selectbox("Metric", keys, key="experiments_metric")
history = cache.metric_history(uri, tuple(shown["run_id"]), key, shown)
if history.empty:
    st.info(f"No history of {key} in these runs.")
else:
    st.plotly_chart(charts.learning_curves(history, key), key="curves")
