"""What the app costs: seconds per CAM method, and the server's memory after one session.

    python -m lungct lab bench-app cam [--models NAME ...] [--sample FILE] [--threads N]
    python -m lungct lab bench-app fidelity [--models NAME ...] [--samples FILE ...]
    python -m lungct lab bench-app memory

(or ``python -m lungct lab bench-app ...``, the name the reports record).

``cam`` times every CAM method once per model with weights on one sample slice
(after a warm-up heatmap), prints wall-clock seconds per method and this
process's CPU seconds (all threads), and writes them to ``reports/cam_seconds.json``:
the app's time estimates for the slow methods are read from that file. On a
busy machine the wall time grows with the load; with ``--threads 1`` the CPU
seconds stay close to what one idle core needs.

``fidelity`` compares the app's AblationCAM and ScoreCAM (the top-variance
channels only, ``lungct.explain.SLOW_CHANNELS``) with the methods as published
(every channel): Pearson r of the two heatmaps and the CPU seconds of each,
written to ``reports/cam_fidelity.json``. The full methods take minutes.

``memory`` drives the app in this process with Streamlit's ``AppTest``, as one
user would: classify an example, the Grad-CAM page with every method (the slow ones
included), the Study page on a 64-slice series with findings (``bench_study.bench_files``),
and the model comparison of all models on one image. It prints
the process's resident memory (RSS) after each step and the peak, and writes
``reports/app_memory.json``.

Run on a quiet machine: both figures move with the load.
"""

from __future__ import annotations

import argparse

import json
import platform
import time
from pathlib import Path

from lungct.config import REPO_ROOT, config_from_args, config_options, report_path
from lungct.explain import SLOW_CHANNELS
from lungct.resources import peak_rss_mb, rss_mb

APP_MEMORY_FILE = "app_memory.json"
CAM_FIDELITY_FILE = "cam_fidelity.json"
SAMPLE = REPO_ROOT / "samples" / "malignant_1.jpg"


def cam_seconds(names: list[str], sample: Path = SAMPLE) -> tuple[dict, dict]:
    """({model: {method: wall seconds}}, {model: {method: CPU seconds}}) for one slice, each
    method run once after a warm-up."""
    from lungct.explain import CAM_METHODS, explain
    from lungct.models import load_model
    from lungct.preprocess import decode_image
    gray = decode_image(sample.read_bytes(), name=sample.name)
    wall, cpu = {}, {}
    for name in names:
        model = load_model(name)
        explain(model, gray)  # warm-up
        wall[name], cpu[name] = {}, {}
        for method in CAM_METHODS:
            start, start_cpu = time.perf_counter(), time.process_time()
            explain(model, gray, method=method)
            wall[name][method] = round(time.perf_counter() - start, 2)
            cpu[name][method] = round(time.process_time() - start_cpu, 2)
    return wall, cpu


def cam_fidelity(names: list[str], samples: list[Path],
                 methods: tuple[str, ...] = ("ScoreCAM", "AblationCAM")) -> list[dict]:
    """Per model, slice and method: Pearson r of the fast and the full heatmap, CPU seconds."""
    import numpy as np

    from lungct.explain import explain
    from lungct.models import load_model
    from lungct.preprocess import decode_image
    rows = []
    for name in names:
        model = load_model(name)
        for sample in samples:
            gray = decode_image(sample.read_bytes(), name=sample.name)
            for method in methods:
                heat, cpu = {}, {}
                for label, channels in (("fast", SLOW_CHANNELS), ("full", None)):
                    start = time.process_time()
                    heat[label] = explain(model, gray, method, channels=channels).heatmap
                    cpu[label] = round(time.process_time() - start, 1)
                r = float(np.corrcoef(heat["fast"].ravel(), heat["full"].ravel())[0, 1])
                rows.append({"model": name, "sample": sample.name, "method": method,
                             "pearson_r": round(r, 4), "cpu_s_fast": cpu["fast"],
                             "cpu_s_full": cpu["full"]})
    return rows


def runnable_models(folder: Path | None = None) -> list[str]:
    """Shipped models whose weights are present (VGG16's are DVC outputs)."""
    from lungct.config import models_dir
    from lungct.models.checkpoint import WEIGHTS_FILE, list_shipped
    folder = folder or models_dir()
    return [n for n in list_shipped(folder) if (folder / n / WEIGHTS_FILE).is_file()]


def machine() -> str:
    import os
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def _write(cfg: dict, name: str, report: dict) -> Path:
    path = report_path(cfg, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def run_cam(args) -> int:
    from lungct.app_support.heatmaps import CAM_SECONDS_FILE
    import torch
    cfg = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or runnable_models()
    seconds, cpu = cam_seconds(names, Path(args.sample))
    methods = list(next(iter(seconds.values())))
    print(f"{'model':<26}" + "".join(f"{m:>15}" for m in methods)
          + "   (wall / CPU seconds per slice)")
    for name, row in seconds.items():
        print(f"{name:<26}" + "".join(f"{f'{row[m]:.1f} / {cpu[name][m]:.1f}':>15}"
                                      for m in methods))
    command = "python -m lungct lab bench-app cam" + (f" --threads {args.threads}"
                                                   if args.threads else "")
    path = _write(cfg, CAM_SECONDS_FILE, {
        "command": command, "machine": machine(), "torch_threads": torch.get_num_threads(),
        "sample": Path(args.sample).name, "models": seconds, "cpu_seconds": cpu})
    print(f"wrote {path}")
    return 0


def run_fidelity(args) -> int:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = cam_fidelity(args.models, [Path(s) for s in args.samples])
    print(f"{'model':<22}{'slice':<18}{'method':<13}{'r':>8}{'CPU s fast':>12}{'CPU s full':>12}")
    for r in rows:
        print(f"{r['model']:<22}{r['sample']:<18}{r['method']:<13}{r['pearson_r']:>8.4f}"
              f"{r['cpu_s_fast']:>12.1f}{r['cpu_s_full']:>12.1f}")
    path = _write(config_from_args(args), CAM_FIDELITY_FILE, {
        "command": "python -m lungct lab bench-app fidelity", "channels": SLOW_CHANNELS,
        "machine": machine(), "torch_threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {path}")
    return 0


def run_memory(args) -> int:
    cfg = config_from_args(args)
    steps = app_session(timeout=args.timeout)
    for step, mb in steps:
        print(f"{step:<58} RSS {mb:7.0f} MB")
    report = {"command": "python -m lungct lab bench-app memory", "machine": machine(),
              "steps": [{"step": s, "rss_mb": round(mb)} for s, mb in steps],
              "rss_mb": round(steps[-1][1]), "peak_rss_mb": round(peak_rss_mb())}
    print(f"after the session: RSS {report['rss_mb']} MB (peak {report['peak_rss_mb']} MB)")
    print(f"wrote {_write(cfg, APP_MEMORY_FILE, report)}")
    return 0


def app_session(timeout: float = 600) -> list[tuple[str, float]]:
    """Drive the app through one user session; (step, RSS MB) after each step."""
    import gc

    from streamlit.testing.v1 import AppTest

    from lungct.explain import CAM_METHODS

    def page(at, name):
        at.switch_page(f"app_pages/{name}.py")
        at.run()
        if at.exception:
            raise RuntimeError(f"{name} page failed: {at.exception[0].value}")
        return at

    steps = [("start", rss_mb())]
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=timeout)
    at.run()
    steps.append(("home page", rss_mb()))
    page(at, "classify")
    at.selectbox(key="classify_example").select(SAMPLE.name).run()
    steps.append(("classify one example (Grad-CAM)", rss_mb()))
    page(at, "gradcam")
    at.radio(key="gradcam_source").set_value("example").run()
    at.checkbox[0].check().run()
    steps.append(("Grad-CAM page: every method, the slow ones too", rss_mb()))
    for method in CAM_METHODS:
        at.selectbox(key="gradcam_class_method").select(method).run()
    steps.append(("Grad-CAM page: each class under every method", rss_mb()))
    from lungct.lab.bench_study import bench_files
    files, _ = bench_files(64)
    at.session_state["study_files"] = tuple(files)
    page(at, "study")
    steps.append(("Study page: a 64-slice series with findings", rss_mb()))
    page(at, "compare")
    at.selectbox(key="compare_example").select(SAMPLE.name).run()
    steps.append(("model comparison: every model on one image", rss_mb()))
    del at
    gc.collect()
    steps.append(("session over", rss_mb()))
    return steps


def add_arguments(parser) -> None:
    common = config_options()
    sub = parser.add_subparsers(dest="bench_app_command", required=True)
    cam = sub.add_parser("cam", parents=[common], help="seconds per CAM method and model")
    cam.add_argument("--models", nargs="*", help="model names (default: all with weights)")
    cam.add_argument("--sample", default=str(SAMPLE), help="the slice to explain")
    cam.add_argument("--threads", type=int, default=0,
                     help="PyTorch threads (default: PyTorch's choice)")
    cam.set_defaults(func=run_cam)
    fidelity = sub.add_parser("fidelity", parents=[common],
                              help="fast vs full AblationCAM/ScoreCAM heatmaps")
    fidelity.add_argument("--models", nargs="*", default=["student_kd"])
    fidelity.add_argument("--samples", nargs="*", default=[str(SAMPLE)])
    fidelity.add_argument("--threads", type=int, default=0, help="PyTorch threads")
    fidelity.set_defaults(func=run_fidelity)
    memory = sub.add_parser("memory", parents=[common], help="server RSS after one user session")
    memory.add_argument("--timeout", type=float, default=600, help="seconds per page run")
    memory.set_defaults(func=run_memory)


def add_command(sub, common) -> None:
    """Register ``bench-app`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("bench-app", parents=[common], help="what the app costs: CAM seconds, CAM fidelity, memory",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
