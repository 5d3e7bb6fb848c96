"""The guard's int8 extractor: built from tracked ranges, checked against the fit machine's
scores, never used stale, and scored against its own threshold.

A folder run spends a sixth of its time in the guard's network; in int8 it costs less than
half (``lungct.guard.features.INT8_FILE``). The guard is fitted on int8 features, and a
float32 threshold chosen by the same rule serves machines where the build is not kept.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lungct.guard import InputGuard, guard_dir
from lungct.guard.features import CALIBRATION_FILE, EXTRACTOR_FILE, INT8_FILE
from lungct.training import guard_fit
from lungct.guard.model import parity_views


@pytest.fixture()
def folder(tmp_path):
    """The shipped guard with its float32 extractor built, without any int8 build."""
    if not (guard_dir() / EXTRACTOR_FILE).exists():
        pytest.skip("the guard's extractor.onnx is not built (`make onnx` builds it)")
    out = tmp_path / "guard"
    shutil.copytree(guard_dir(), out, ignore=shutil.ignore_patterns(INT8_FILE, "extractor.json"))
    return out


def _export_int8(guard, views, **kw) -> dict:
    """``guard.export_int8``; on a CPU whose integer kernels score the parity views beyond
    the limit, the guard must fall back to float32, and the int8 checks below do not apply."""
    record = guard_fit.export_int8(guard, views, **kw)
    if not record["passed"] and not kw and "reason" not in record:
        assert not (guard.folder / INT8_FILE).exists()
        assert InputGuard.load(guard.folder).precision == "float32"
        pytest.skip(f"this CPU's int8 build scores the parity views "
                    f"{record.get('max_abs_score_diff')} from the fit machine's (limit "
                    f"{record.get('max_score_diff_allowed')}): the guard runs in float32 here")
    return record


def test_the_shipped_guard_has_ranges_and_a_threshold_per_precision():
    card = json.loads((guard_dir() / "guard.json").read_text())
    assert (guard_dir() / CALIBRATION_FILE).stat().st_size < 100_000
    assert set(card["thresholds"]) == {"int8", "float32"}
    assert card["threshold"] == card["thresholds"]["int8"]
    assert card["int8"]["float32_threshold"] == card["thresholds"]["float32"]
    assert len(card["int8"]["parity_scores"]) == len(parity_views())


def test_int8_build_is_kept_when_it_scores_as_the_fit_did(folder):
    float_guard = InputGuard.load(folder)
    assert float_guard.precision == "float32"          # nothing built yet
    assert float_guard.threshold == pytest.approx(float_guard.card["thresholds"]["float32"])
    views = parity_views(float_guard.size)
    record = _export_int8(float_guard, views)
    assert record["passed"] and record["verdicts_identical"], record
    assert record["max_abs_score_diff"] <= record["max_score_diff_allowed"]
    guard = InputGuard.load(folder)
    assert guard.precision == "int8" and guard.backend == "onnx"
    assert guard.threshold == pytest.approx(guard.card["thresholds"]["int8"])
    scores = guard.score_views(views)
    assert scores == pytest.approx(guard.card["int8"]["parity_scores"],
                                   abs=record["max_score_diff_allowed"])
    # int8 and float32 features score the same views close, not equal: hence two limits
    assert np.max(np.abs(scores - float_guard.score_views(views))) < 1.0
    # params.yaml's ood.threshold stands for both precisions
    assert InputGuard.load(folder, cfg={"ood": {"threshold": 9.0}}).threshold == 9.0


def test_an_impossible_check_or_stale_ranges_mean_float32(folder):
    guard = InputGuard.load(folder)
    views = parity_views(guard.size)
    assert not guard_fit.export_int8(guard, views, max_score_diff=-1.0)["passed"]
    assert not (folder / INT8_FILE).exists()
    assert _export_int8(guard, views)["passed"]
    ranges = json.loads((folder / CALIBRATION_FILE).read_text())
    ranges["data"] = dict(ranges["data"])       # refit: other ranges, same tensors
    key = sorted(ranges["data"])[0]
    ranges["data"][key] = dict(ranges["data"][key])
    (folder / CALIBRATION_FILE).write_text(json.dumps(ranges) + " ")
    stale = InputGuard.load(folder)
    assert stale.precision == "float32" and stale.backend == "onnx"


def test_float32_precision_setting_turns_the_int8_guard_off(folder, monkeypatch):
    assert _export_int8(InputGuard.load(folder), parity_views())["passed"]
    monkeypatch.setenv("LUNGCT_PRECISION", "float32")
    guard = InputGuard.load(folder)
    assert guard.precision == "float32"
    assert guard.threshold == pytest.approx(guard.card["thresholds"]["float32"])


def test_no_ranges_no_int8(folder):
    (folder / CALIBRATION_FILE).unlink()
    guard = InputGuard.load(folder)
    record = guard_fit.export_int8(guard, parity_views(guard.size))
    assert not record["passed"] and "ranges" in record["reason"]
    assert guard.precision == "float32"
