"""``python -m lungct predict`` on folders: batches, prefetch, CSV, errors, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lungct.pipeline import prefetch
from lungct.cli import main as cli_main
from lungct.cli.predict import CSV_COLUMNS
from lungct.config import load_config, resolve
from lungct.models import create_model, save_model
from lungct.training.onnx_export import export_model

SAMPLES = sorted(resolve("samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli_model")
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", input_size=64)
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.mul_(20)
    folder = save_model(model, tmp / "tiny", {"protocol": "grouped"})
    cfg = load_config()
    cfg["data"]["root"] = str(tmp / "no-dataset")
    export_model(folder, cfg)
    return folder


@pytest.fixture()
def folder(tmp_path) -> Path:
    """The samples, one of them in a subfolder, plus a bad file."""
    d = tmp_path / "slices"
    (d / "sub").mkdir(parents=True)
    for i, p in enumerate(SAMPLES):
        shutil.copy(p, (d / "sub" if i == 0 else d) / p.name)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (d / "notes.txt").write_text("not an image suffix: ignored")
    return d


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = cli_main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def test_folder_to_csv_and_json(model_dir, folder, tmp_path, capsys):
    out_csv = tmp_path / "out.csv"
    rc, out, err = run_cli(capsys, folder, "--model", model_dir, "--csv", out_csv, "--json",
                           "--batch-size", "4")
    assert rc == 0
    rows = read_csv(out_csv)
    assert len(rows) == len(SAMPLES) + 1  # one row per image file, notes.txt skipped
    by_name = {Path(r["file"]).name: r for r in rows}
    bad = by_name["broken.png"]
    assert bad["error"] and not bad["label"] and not bad["p_normal"]
    good = [r for r in rows if r["file"] != bad["file"]]
    assert all(not r["error"] and r["backend"] == "onnx" and r["model"] == "tiny"
               for r in good)
    for r in good:
        probs = [float(r[f"p_{c}"]) for c in ("normal", "benign", "malignant")]
        assert abs(sum(probs) - 1) < 1e-4 and r["label"] in ("normal", "benign", "malignant")
        assert r["unsure"] in ("true", "false")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["file"] for x in lines] == [r["file"] for r in rows]  # same order
    assert set(lines[[x["file"] for x in lines].index(bad["file"])]) == {"file", "error"}
    assert f"{len(rows)} rows (1 with an error)" in err


def test_batches_and_backends_agree(model_dir, folder, tmp_path, capsys):
    """Batch size 1 vs 3 (uneven last batch), ONNX vs PyTorch, 2 decode workers."""
    results = {}
    for tag, extra in {"b1": ["--batch-size", "1"],
                       "b3": ["--batch-size", "3", "--workers", "2"],
                       "torch": ["--backend", "torch", "--batch-size", "32"]}.items():
        rc, out, _ = run_cli(capsys, folder, "--model", model_dir, "--json", *extra)
        assert rc == 0
        results[tag] = [json.loads(line) for line in out.splitlines()]
    files = [x["file"] for x in results["b1"]]
    for tag in ("b3", "torch"):
        assert [x["file"] for x in results[tag]] == files
        assert [x.get("label") for x in results[tag]] == [x.get("label") for x in results["b1"]]
    assert {x["backend"] for x in results["torch"] if "label" in x} == {"torch"}
    for a, b in zip(results["b1"], results["torch"]):
        if "label" in a:
            assert max(abs(a["probabilities"][k] - b["probabilities"][k])
                       for k in a["probabilities"]) <= 1e-4


def test_text_output_missing_file_and_exit_codes(model_dir, tmp_path, capsys):
    rc, out, _ = run_cli(capsys, SAMPLES[0], tmp_path / "missing.jpg", "--model", model_dir)
    assert rc == 0
    first, second = out.splitlines()
    assert "backend=onnx" in first and "model=tiny" in first
    assert second.startswith(str(tmp_path / "missing.jpg")) and "ERROR" in second
    rc, _, err = run_cli(capsys, SAMPLES[0], "--model", tmp_path / "no-such-model")
    assert rc == 2 and "error:" in err
    rc, _, err = run_cli(capsys, SAMPLES[0], "--model", model_dir, "--batch-size", "0")
    assert rc == 2
    rc, _, err = run_cli(capsys, SAMPLES[0], "--model", model_dir, "--csv",
                         tmp_path / "no-dir" / "x.csv")
    assert rc == 2 and "cannot write" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = run_cli(capsys, empty, "--model", model_dir)
    assert rc == 0 and out == "" and "no image files" in err


def test_progress_bar_goes_to_stderr(model_dir, folder, capsys):
    rc, out, err = run_cli(capsys, folder, "--model", model_dir, "--progress", "--json")
    assert rc == 0 and "img" in err and "%" in err
    assert all(line.startswith("{") for line in out.splitlines())


def test_prefetch_keeps_order_bounds_lookahead_and_overlaps():
    started, lock = [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))  # out-of-order completion
        if i == 5:
            raise ValueError("five")
        return i * i

    it = prefetch(range(20), work, workers=3, ahead=4)
    assert next(it) == 0
    time.sleep(0.05)
    assert max(started) <= 4  # never more than `ahead` items in flight or waiting
    got = [next(it) for _ in range(4)]
    assert got == [1, 4, 9, 16]
    with pytest.raises(ValueError, match="five"):
        next(it)


def test_worker_processes_give_the_rows_of_one_process(model_dir, tmp_path, capsys):
    """A folder of many files in forked worker processes (``--processes 2``): the same rows,
    in the same order, as in this process, a bad file included; the guard runs in them."""
    from lungct.pipeline.batch import MIN_PARALLEL_FILES, forked_processes, parallel_processes
    from lungct.guard import load_guard
    from lungct.inference import Classifier

    cfg = load_config()
    cfg["runtime"]["threads"] = 1
    guard = load_guard(cfg=cfg)
    if guard.backend != "onnx":
        pytest.skip("the guard's extractor.onnx is not built (`make onnx` builds it)")
    assert forked_processes(Classifier.from_name(str(model_dir), cfg=cfg), guard, 2) == 2
    d = tmp_path / "many"
    d.mkdir()
    n = MIN_PARALLEL_FILES + 5
    for i in range(n):
        shutil.copy(SAMPLES[i % len(SAMPLES)], d / f"{i:03d}_{SAMPLES[i % len(SAMPLES)].name}")
    (d / "040_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    assert parallel_processes(n + 1, 2) == (2 if sys.platform == "linux" else 1)
    assert parallel_processes(MIN_PARALLEL_FILES - 1) == 1
    # OpenCV's thread pool running in this process before the fork (as after the benchmark's
    # single-image runs): a child that inherited it once hung for good
    import cv2
    cv2.GaussianBlur(np.zeros((2048, 2048), np.float32), (0, 0), 3.0)
    rows = {}
    for procs in ("1", "2"):
        rc, out, _ = run_cli(capsys, d, "--model", model_dir, "--json", "--processes", procs)
        assert rc == 0
        rows[procs] = [json.loads(line) for line in out.splitlines()]
    one, two = rows["1"], rows["2"]
    assert len(one) == n + 1 and [r["file"] for r in two] == [r["file"] for r in one]
    assert [r.get("label") for r in two] == [r.get("label") for r in one]
    assert sum("error" in r for r in two) == sum("error" in r for r in one) >= 1
    for a, b in zip(one, two):
        assert ("ood" in a) == ("ood" in b)
        if "ood" in a:
            assert abs(a["ood"]["score"] - b["ood"]["score"]) <= 1e-4
        if "label" in a:
            assert max(abs(a["probabilities"][k] - b["probabilities"][k])
                       for k in a["probabilities"]) <= 1e-5
    rc, _, err = run_cli(capsys, d, "--model", model_dir, "--processes", "0")
    assert rc == 2 and "--processes" in err
