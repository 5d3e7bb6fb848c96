"""The comparison page's tables fit a 1440 px window; a model keeps its colour in every chart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lungct.app_support import charts, comparison


def test_display_groups_cover_the_table_in_narrow_parts():
    table = pd.DataFrame([{"model": "m", "kind": "ours", "n_test": 219}])
    for c in comparison.SUMMARY_COLUMNS:
        table[c] = table.get(c, float("nan"))
    table[list(comparison.TEXT_COLUMNS)] = table[list(comparison.TEXT_COLUMNS)].fillna("")
    shown = comparison.display_table(table)
    groups = comparison.DISPLAY_GROUPS.values()
    assert all(cols[0] == "model" and len(cols) <= 10 for cols in groups)
    assert {c for cols in groups for c in cols} == set(shown.columns)


def test_model_colours_do_not_depend_on_the_subset():
    every = charts.model_colours(["b", "a", "c", "a"])
    assert len(set(every.values())) == 3
    curve = {"fpr": [0, 1], "tpr": [0, 1], "auc": 0.5}
    roc = charts.roc_figure({"c": curve}, "malignant", every)
    rel = charts.reliability_figure({"c": {"confidence": [0.5], "accuracy": [0.5],
                                           "count": [3]}, "a": {"confidence": [0.5],
                                                                "accuracy": [0.4],
                                                                "count": [2]}}, every)
    long = pd.DataFrame({"model": ["a", "c"], "class": ["normal"] * 2, "metric": ["f1"] * 2,
                         "value": [0.5, 0.6], "lo": [0.4, 0.5], "hi": [0.6, 0.7]})
    bars = charts.per_class_bars(long, every)
    colour_of = {}
    for fig in (roc, rel, bars):
        for trace in fig.data:
            name = trace.name.split(" ")[0]
            if name in every:
                colour = trace.marker.color if trace.type == "bar" else trace.line.color
                colour_of.setdefault(name, set()).add(colour)
    assert colour_of == {"a": {every["a"]}, "c": {every["c"]}}
    assert np.all([c != every["b"] for c in (every["a"], every["c"])])
