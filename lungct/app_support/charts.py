"""Plotly figures for the app's pages (pure functions: data in, figure out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lungct import CLASSES

CLASS_COLOURS = {"normal": "#2e7d32", "benign": "#f9a825", "malignant": "#c62828"}
MODEL_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#7f7f7f", "#d62728")


def model_colours(names) -> dict[str, str]:
    """One colour per model, by sorted name: pass every model of the page so that a model
    keeps its colour in every chart, whichever subset a chart shows."""
    return {n: MODEL_PALETTE[i % len(MODEL_PALETTE)] for i, n in enumerate(sorted(set(names)))}


def probability_bar(probabilities: dict, unsure_below: float | None = None,
                    height: int = 180) -> go.Figure:
    """Horizontal bars of the three class probabilities, threshold line dashed."""
    classes = [c for c in CLASSES if c in probabilities]
    values = [float(probabilities[c]) for c in classes]
    fig = go.Figure(go.Bar(x=values, y=classes, orientation="h",
                           marker_color=[CLASS_COLOURS.get(c, "#607d8b") for c in classes],
                           text=[f"{v:.3f}" for v in values], textposition="auto"))
    if unsure_below:
        fig.add_vline(x=unsure_below, line_dash="dash", line_color="grey",
                      annotation_text="unsure below", annotation_position="top")
    fig.update_layout(xaxis=dict(range=[0, 1], title="calibrated probability"),
                      yaxis=dict(autorange="reversed"), height=height,
                      margin=dict(l=10, r=10, t=25, b=10), showlegend=False)
    return fig


def confusion_heatmap(matrix, title: str = "", classes=CLASSES) -> go.Figure:
    m = np.asarray(matrix)
    fig = go.Figure(go.Heatmap(z=m, x=list(classes), y=list(classes), colorscale="Blues",
                               text=m, texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true",
                      yaxis=dict(autorange="reversed"), height=320,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _err(df: pd.DataFrame, col: str) -> dict:
    lo, hi = df[f"{col}_lo"], df[f"{col}_hi"]
    return dict(type="data", symmetric=False, array=(hi - df[col]).clip(lower=0),
                arrayminus=(df[col] - lo).clip(lower=0), visible=True)


def headline_bars(table: pd.DataFrame) -> go.Figure:
    """Accuracy and malignant recall per row with their 95% CIs (references included)."""
    fig = go.Figure()
    df = table.copy()
    for col in ("accuracy", "malignant_recall"):
        if f"{col}_lo" not in df:
            df[f"{col}_lo"] = df[f"{col}_hi"] = np.nan
        fig.add_trace(go.Bar(name=col.replace("_", " "), x=df["model"], y=df[col],
                             error_y=_err(df, col)))
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1.05], title="test value"),
                      height=420, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      xaxis=dict(tickangle=-25))
    return fig


def per_class_bars(long: pd.DataFrame, colours: dict[str, str] | None = None) -> go.Figure:
    """Precision / recall / F1 per class and model, error bars = bootstrap 95% CI."""
    from plotly.subplots import make_subplots
    metrics = ["precision", "recall", "f1"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=metrics, shared_yaxes=True)
    colours = colours or model_colours(long["model"])
    for model, df in long.groupby("model", sort=False):
        for j, metric in enumerate(metrics, start=1):
            d = df[df["metric"] == metric].rename(columns={"lo": "value_lo", "hi": "value_hi"})
            fig.add_trace(go.Bar(name=model, x=d["class"], y=d["value"],
                                 error_y=_err(d, "value"), legendgroup=model,
                                 showlegend=j == 1, marker_color=colours.get(model)),
                          row=1, col=j)
    fig.update_layout(barmode="group", height=400, yaxis=dict(range=[0, 1.05]),
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0))
    return fig


def roc_figure(curves: dict[str, dict], class_name: str,
               colours: dict[str, str] | None = None) -> go.Figure:
    fig = go.Figure()
    colours = colours or model_colours(curves)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(dash="dash", color="grey")))
    for model, c in curves.items():
        if c["auc"] is None:
            continue
        fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines",
                                 name=f"{model} (AUC {c['auc']:.3f})",
                                 line=dict(color=colours.get(model))))
    fig.update_layout(title=f"ROC, {class_name} vs rest", xaxis_title="false positive rate",
                      yaxis_title="true positive rate", height=420,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def reliability_figure(curves: dict[str, dict],
                       colours: dict[str, str] | None = None) -> go.Figure:
    fig = go.Figure()
    colours = colours or model_colours(curves)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dash", color="grey")))
    for model, c in curves.items():
        keep = np.asarray(c["count"]) > 0
        fig.add_trace(go.Scatter(x=np.asarray(c["confidence"])[keep],
                                 y=np.asarray(c["accuracy"])[keep], mode="lines+markers",
                                 name=model, line=dict(color=colours.get(model)), text=[f"n={n}" for n in np.asarray(c["count"])[keep]],
                                 hovertemplate="confidence %{x:.2f}, accuracy %{y:.2f}, "
                                               "%{text}<extra></extra>"))
    fig.update_layout(title="Reliability (top-label confidence vs accuracy, test split)",
                      xaxis=dict(range=[0, 1], title="mean confidence"),
                      yaxis=dict(range=[0, 1], title="accuracy"), height=420,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def learning_curves(history: pd.DataFrame, key: str) -> go.Figure:
    fig = go.Figure()
    for run, df in history.groupby("run", sort=False):
        df = df.sort_values("step")
        fig.add_trace(go.Scatter(x=df["step"], y=df["value"], mode="lines+markers", name=run))
    fig.update_layout(title=key, xaxis_title="epoch", yaxis_title=key, height=400,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
