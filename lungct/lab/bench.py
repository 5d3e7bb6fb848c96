"""Benchmark: size and CPU speed of every shipped model on both backends, VGG16 as the reference.

    python -m lungct lab bench [--write-cards] [--repeats 20] [--batch 32] [--models NAME ...]

(or ``python -m lungct lab bench ...``, as dvc.yaml runs it).

Per model and backend (PyTorch eager, ONNX Runtime): parameters, FLOPs,
weight file size, median single-image latency end to end from file bytes
(decode, preprocess, forward, calibrated softmax: ``Classifier.predict_bytes``)
and batched throughput (preprocess + forward, images/s), with ratios to VGG16
(torchvision VGG16 at 224 px, 3-class head, PyTorch eager: the paper's
student; its weights do not change its speed) and ONNX-over-PyTorch. A model
without a ``model.onnx`` is exported to a temporary folder for the run.

Then the CLI path: images/s through ``predict``'s batched pipeline (decoding
in a background thread, batches of ``--batch``) on a folder, the dataset's
when present, else the committed samples copied into a temporary folder.

Run it on a quiet machine: numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse

import json
import sys
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lungct.pipeline.batch import PROCESS_BATCH
from lungct.pipeline.findings import findings_setting
from lungct.config import config_from_args, load_config, resolve
from lungct.inference import Classifier
from lungct.models.stats import count_flops
from lungct.models import create_model, list_shipped, load_model
from lungct.config import models_dir
from lungct.models.checkpoint import WEIGHTS_FILE, model_card_base, read_card, write_card
from lungct.onnx_runtime import (INT8_FILE, ONNX_FILE, OnnxUnavailable, import_onnxruntime,
                                 load_onnx, open_session, runtime_settings)
from lungct.preprocess import decode_image

TARGETS = {"latency_ms": 15.0, "cli_ips": 100.0, "speedup_vs_vgg16": 20.0}
"""The issue's goals for the default student (reported, not asserted)."""


def latency_ms(clf: Classifier, data: bytes, repeats: int = 20,
               warmup: int = 3) -> tuple[float, float]:
    """Median wall and CPU milliseconds from file bytes to a Prediction, one image at a time.

    CPU time is this process's, all threads together: on a busy machine the
    wall time grows with the load, the CPU time much less, so it tells what
    the latency would be on a quiet machine when one thread does the work.
    """
    times, cpu = [], []
    for i in range(warmup + repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        clf.predict_bytes(data)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(times), statistics.median(cpu)


def throughput_ips(clf: Classifier, grays: list[np.ndarray], batch: int = 32,
                   rounds: int = 2) -> float:
    """Images per second for preprocess + forward in batches (decoding excluded)."""
    clf.predict_many(grays[:batch], batch)  # warm-up
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        clf.predict_many(grays, batch)
        rates.append(len(grays) / (time.perf_counter() - start))
    return statistics.median(rates)


def onnx_classifier(model, name: str, folder: Path | None, card: dict, tmp: Path,
                    settings) -> tuple[Classifier, str]:
    """The model's ONNX classifier: its own model.onnx if usable, else a fresh temporary export."""
    if folder is not None and (folder / ONNX_FILE).exists():
        try:
            onnx = load_onnx(folder, card, settings.threads, settings.max_batch,
                             settings.parity_max_diff, settings.precision)
            return Classifier(None, onnx=onnx, card=card, folder=folder), onnx.path.name
        except OnnxUnavailable as err:
            print(f"note: {name}: {err}; benchmarking a temporary export instead")
    from lungct.training.onnx_export import export_onnx

    out = tmp / name.split(" ")[0]
    out.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, out / ONNX_FILE)
    clf = Classifier(None, onnx=open_session(path, settings.threads, settings.max_batch),
                     card=card, folder=out)
    return clf, "temporary"


def bench_model(model, name: str, samples: list[bytes], repeats: int, batch: int,
                folder: Path | None, backends: list[str], tmp: Path, settings,
                n_images: int = 64, rounds: int = 2) -> list[dict]:
    """One row per backend for one model."""
    base = {"model": name, "arch": model.arch, "input_size": model.input_size,
            "params": sum(p.numel() for p in model.parameters()),
            "flops": count_flops(model, model.input_size)}
    if folder is not None and (folder / WEIGHTS_FILE).exists():
        base["weights_mb"] = round((folder / WEIGHTS_FILE).stat().st_size / 2**20, 2)
    card = dict(getattr(model, "card", None) or model_card_base(model))
    grays = [decode_image(d) for d in samples]
    grays = (grays * (n_images // len(grays) + 1))[:n_images]
    rows = []
    for backend in backends:
        if backend == "torch":
            clf, source = Classifier(model, card=card, folder=folder), "eager"
        else:
            try:
                clf, source = onnx_classifier(model, name, folder, card, tmp, settings)
            except Exception as err:  # not exportable (e.g. VGG's 7x7 pool at 64 px)
                print(f"note: {name}: no ONNX row ({type(err).__name__})", file=sys.stderr)
                continue
        wall, cpu = latency_ms(clf, samples[0], repeats)
        row = {**base, "backend": backend, "source": source,
               "latency_ms": round(wall, 2), "latency_cpu_ms": round(cpu, 2),
               "throughput_ips": round(throughput_ips(clf, grays, batch, rounds), 1)}
        if backend == "onnx":
            row["onnx_mb"] = round(clf.onnx_model.path.stat().st_size / 2**20, 2)
            row["precision"] = clf.onnx_model.precision
        rows.append(row)
    return rows


def cli_folder_throughput(name: str, cfg: dict, backend: str, batch: int, n_images: int,
                          tmp: Path, workers: int = 1, rounds: int = 3,
                          with_guard: bool = False) -> dict:
    """Images/s through ``predict``'s batched pipeline on a folder (model load excluded).

    The median of ``rounds`` passes (PyTorch gets one: it is slow and the
    figure is only a reference), over all images (worker processes started
    included) and over the first half; ``marginal_ips``, from the difference,
    is the rate once running (how issue 12 measured predict: marginal over 500
    images). ``with_guard``: the input guard screens every slice first, as
    ``predict`` does by default. The findings stage runs as params ``findings.enabled``
    says (``--set findings.enabled=false``: the classification-only rate).
    """
    from lungct.pipeline.batch import expand_inputs, forked_processes, parallel_processes, predict_paths

    findings = findings_setting(cfg)

    root = resolve(cfg["data"]["root"])
    paths = expand_inputs([str(root)]) if root.is_dir() else []
    if paths:
        step = max(1, len(paths) // n_images) if n_images else 1
        paths = paths[::step][:n_images or None]
        where = f"{len(paths)} dataset images (every {step}th file of {root.name})"
    else:
        folder = tmp / "cli_folder"
        folder.mkdir(parents=True, exist_ok=True)
        samples = sorted(resolve("samples").glob("*.jpg"))
        n = n_images or 256
        for i in range(n):
            src = samples[i % len(samples)]
            shutil.copy(src, folder / f"{i:04d}_{src.name}")
        paths = sorted(folder.iterdir())
        where = f"{n} copies of samples/*.jpg in a temporary folder (dataset absent)"
    processes = parallel_processes(len(paths)) if backend != "torch" else 1
    if processes > 1:   # as `predict` runs it: one thread per worker process
        cfg = {**cfg, "runtime": {**cfg["runtime"], "threads": 1}}
    clf = Classifier.from_name(name, backend=backend, cfg=cfg)
    guard = None
    if with_guard:
        from lungct.guard import load_guard
        guard = load_guard(cfg=cfg)
    list(predict_paths(clf, paths[:batch], batch_size=batch, progress=False,
                       guard=guard, findings=findings))  # warm-up
    def run(part: list[Path]) -> tuple[float, list[dict]]:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            rows = list(predict_paths(clf, part, batch_size=batch, workers=workers,
                                      progress=False, guard=guard, processes=processes,
                                      findings=findings))
            times.append(time.perf_counter() - start)
        return statistics.median(times), rows

    seconds, results = run(paths)
    half, _ = run(paths[:len(paths) // 2])
    errors = sum("error" in r for r in results)
    extra = len(paths) - len(paths) // 2
    # the rate once running: start-up (worker processes, first batches) cancels out
    marginal = extra / (seconds - half) if seconds > half else None
    return {"model": name, "backend": clf.backend, "precision": _precision(clf),
            "images": len(paths), "errors": errors,
            "seconds": round(seconds, 2), "throughput_ips": round(len(paths) / seconds, 1),
            "half_seconds": round(half, 2),
            "marginal_ips": round(marginal, 1) if marginal else None,
            "rounds": rounds, "batch_size": batch, "workers": workers, "folder": where,
            "processes": forked_processes(clf, guard, processes),
            "guard": with_guard}


def _precision(clf: Classifier) -> str | None:
    return clf.onnx_model.precision if clf.onnx_model is not None else None


def _batch(c: dict) -> int:
    """Slices per forward pass of a folder run (worker processes take ``PROCESS_BATCH``)."""
    return min(c["batch_size"], PROCESS_BATCH) if c.get("processes", 1) > 1 else c["batch_size"]


def _on(r: dict) -> str:
    """"onnx int8", "onnx" or "torch": what ran, for the printed report."""
    return r["backend"] + (" int8" if r.get("precision") == "int8" else "")


def guarded_latency_ms(name: str, data: bytes, cfg: dict, repeats: int = 20) -> dict:
    """One image end to end as users run it: file bytes -> decode -> input guard ->
    classify -> findings as params ``findings.enabled`` says (``lungct.pipeline.run_case``,
    the app's and ``case``'s path), warm, median."""
    from lungct.guard import load_guard
    from lungct.pipeline import run_case

    findings = findings_setting(cfg)
    clf = Classifier.from_name(name, cfg["app"]["unsure_below"], cfg=cfg)
    guard = load_guard(cfg=cfg)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        result = run_case([("slice.jpg", data)], clf, guard, findings=findings).slices[0]
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return {"model": name, "backend": clf.backend, "precision": _precision(clf),
            "guard_backend": guard.backend,
            "status": result.status, "median_ms": round(statistics.median(times), 1),
            "repeats": repeats, "stages_ms": stage_ms(clf, guard, data, repeats)}


def stage_ms(clf: Classifier, guard, data: bytes, repeats: int = 20) -> dict:
    """Where one image's time goes: each stage of the guarded path alone, warm, median ms
    (the pipeline overlaps some of them across slices, never within one)."""
    from lungct.lungs import lung_view, segment
    from lungct.preprocess import decode_image

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 2)

    gray = decode_image(data, name="slice.jpg")
    seg = segment(gray)
    view = lung_view(gray, guard.size, seg)
    x = clf.prepare(gray)
    return {"decode": median_ms(lambda: decode_image(data, name="slice.jpg")),
            "segmentation": median_ms(lambda: segment(gray)),
            "lung_view": median_ms(lambda: lung_view(gray, guard.size, seg)),
            "guard_network": median_ms(lambda: guard.score_views([view])),
            "model_input": median_ms(lambda: clf.prepare(gray)),
            "model": median_ms(lambda: clf.predict_prepared([x]))}


def app_heatmap_ms(name: str, data: bytes, cfg: dict, repeats: int = 5) -> dict:
    """What a radiologist waits for in the app, warm: decode, input guard, classify, Grad-CAM, overlay.

    The app's own path: ``lungct.pipeline.run_case`` then ``lungct.pipeline.heatmap``.
    """
    from lungct.guard import load_guard
    from lungct.pipeline import heatmap, run_case
    from lungct.errors import LungctError

    clf = Classifier.from_name(name, cfg["app"]["unsure_below"], cfg=cfg)
    findings = findings_setting(cfg)
    try:
        guard = load_guard(cfg=cfg)
    except LungctError:
        guard = None
    times = []
    for i in range(repeats + 1):  # the first run loads the PyTorch model for Grad-CAM
        start = time.perf_counter()
        result = run_case([("slice.jpg", data)], clf, guard, findings=findings).slices[0]
        heatmap(clf, result, "Grad-CAM").overlay(result.gray)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return {"model": name, "backend": clf.backend, "precision": _precision(clf),
            "guard": guard is not None,
            "median_ms": round(statistics.median(times), 1), "repeats": repeats}


def run(repeats: int = 20, batch: int = 32, write_cards: bool = False,
        models: list[str] | None = None, backends: list[str] | None = None,
        cli_images: int = 256, reference_repeats: int | None = None,
        reference_onnx: bool = False, cfg: dict | None = None) -> dict:
    cfg = load_config() if cfg is None else cfg
    settings = runtime_settings(cfg)
    samples = [p.read_bytes() for p in sorted(resolve("samples").glob("*.jpg"))]
    if not samples:
        raise FileNotFoundError("no samples/*.jpg to benchmark with")
    backends = backends or ["torch", "onnx"]
    if "onnx" in backends:
        try:
            import_onnxruntime()
        except OnnxUnavailable as err:
            print(f"note: {err}: PyTorch only")
            backends = [b for b in backends if b != "onnx"]
    rows = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="lungct-bench-") as tmpdir:
        tmp = Path(tmpdir)
        reference = create_model("vgg16", pretrained=False).eval()
        ref_backends = backends if reference_onnx else ["torch"]
        rows += bench_model(reference, "vgg16 (reference, 224 px)", samples,
                            reference_repeats or max(5, repeats // 3), batch, None,
                            ref_backends, tmp, settings, n_images=32, rounds=1)
        del reference
        names = models or list_shipped()
        for name in names:
            folder = models_dir() / name
            if not (folder / WEIGHTS_FILE).exists():
                print(f"skip {name}: no model.safetensors")
                continue
            rows += bench_model(load_model(name), name, samples, repeats, batch, folder,
                                backends, tmp, settings)
        ref = rows[0]
        torch_latency = {r["model"]: r["latency_ms"] for r in rows if r["backend"] == "torch"}
        for row in rows:
            row["speedup_vs_vgg16"] = round(ref["latency_ms"] / row["latency_ms"], 1)
            row["flops_ratio_vs_vgg16"] = round(row["flops"] / ref["flops"], 4)
            if row["backend"] != "torch" and row["model"] in torch_latency:
                row["speedup_vs_torch"] = round(torch_latency[row["model"]] / row["latency_ms"], 2)
        default = cfg["app"]["default_model"]
        cli_model = default if default in names else next(
            (r["model"] for r in rows[1:]), None)
        cli = []
        if cli_model and cli_images >= 0:
            for backend in backends:
                try:
                    for with_guard in (False, True):
                        cli.append(cli_folder_throughput(
                            cli_model, cfg, backend, batch, cli_images, tmp,
                            rounds=3 if backend == "onnx" else 1, with_guard=with_guard))
                except OnnxUnavailable as err:
                    print(f"note: CLI throughput on {backend} skipped: {err}")
        app = (app_heatmap_ms(cli_model, samples[0], cfg) if cli_model else None)
        single = (guarded_latency_ms(cli_model, samples[0], cfg, repeats) if cli_model
                  else None)
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "torch_threads": torch.get_num_threads(),
              "onnx_threads": settings.threads or "auto",
              "onnx_max_batch": settings.max_batch,
              "cpu_count": os.cpu_count(), "load_avg_1m": [load_before, _load()],
              "rows": rows, "cli_folder": cli, "app_classify_with_heatmap": app,
              "single_image_with_guard": single}
    try:
        import onnxruntime
        report["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    report["targets"] = targets(report, cli_model)
    if write_cards:
        store_in_cards(report)
    return report


def _load() -> float | None:
    """1-minute load average (None where the OS has none): how busy the machine was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def targets(report: dict, model: str | None) -> dict:
    """The issue's goals for the default model on the backend it runs on by default."""
    rows = [r for r in report["rows"] if r["model"] == model]
    if not rows:
        return {}
    best = min(rows, key=lambda r: r["latency_ms"])
    # the CLI goal is for the path users run: predict with the guard on
    cli = max((c for c in report["cli_folder"] if c.get("guard")),
              key=lambda c: c.get("marginal_ips") or c["throughput_ips"], default=None)
    out = {"model": model, "backend": best["backend"],
           "latency_ms": best["latency_ms"], "latency_target_ms": TARGETS["latency_ms"],
           "speedup_vs_vgg16": best["speedup_vs_vgg16"],
           "speedup_target": TARGETS["speedup_vs_vgg16"]}
    if cli:
        out.update(cli_ips=cli.get("marginal_ips") or cli["throughput_ips"],
                   cli_whole_run_ips=cli["throughput_ips"], cli_backend=cli["backend"],
                   cli_target_ips=TARGETS["cli_ips"])
    single = report.get("single_image_with_guard")
    if single:
        out["latency_guard_ms"] = single["median_ms"]
    out["met"] = {"latency": out["latency_ms"] <= TARGETS["latency_ms"],
                  "speedup": out["speedup_vs_vgg16"] >= TARGETS["speedup_vs_vgg16"]}
    if single:
        out["met"]["latency_guard"] = single["median_ms"] <= TARGETS["latency_ms"]
    if cli:
        out["met"]["cli"] = out["cli_ips"] >= TARGETS["cli_ips"]
    return out


def store_in_cards(report: dict) -> None:
    """Per model: the figures of each backend, and the default backend's as the headline."""
    by_model: dict[str, list[dict]] = {}
    for row in report["rows"][1:]:
        by_model.setdefault(row["model"], []).append(row)
    for name, rows in by_model.items():
        folder = models_dir() / name
        card = read_card(folder)
        # the shipped ONNX files (float32 or the int8 twin users run by default), not a
        # temporary export
        has_onnx = any(r["backend"] == "onnx" and r["source"] in (ONNX_FILE, INT8_FILE)
                       for r in rows)
        default = "onnx" if has_onnx and runtime_settings().backend != "torch" else "torch"
        head = next((r for r in rows if r["backend"] == default), rows[0])
        per_backend = {r["backend"]: {"latency_ms": r["latency_ms"],
                                      "latency_cpu_ms": r["latency_cpu_ms"],
                                      "throughput_ips": r["throughput_ips"],
                                      "speedup_vs_vgg16": r["speedup_vs_vgg16"],
                                      **({"speedup_vs_torch": r["speedup_vs_torch"]}
                                         if "speedup_vs_torch" in r else {})}
                       for r in rows}
        stats = {**card.get("stats", {}),
                 "params": head["params"], "flops": head["flops"],
                 "weights_mb": head.get("weights_mb"), "cpu_latency_ms": head["latency_ms"],
                 "cpu_throughput_ips": head["throughput_ips"],
                 "speedup_vs_vgg16": head["speedup_vs_vgg16"], "cpu_backend": head["backend"],
                 "backends": per_backend,
                 "measured_with": "python -m lungct lab bench", "threads": torch.get_num_threads(),
                 "onnx_threads": report["onnx_threads"], "load_avg_1m": report["load_avg_1m"]}
        for cli in report["cli_folder"]:
            if cli["model"] == name and cli["backend"] == default:
                key = "cli_folder_ips" if cli.get("guard") else "cli_folder_ips_no_guard"
                stats[key] = cli["throughput_ips"]        # over the whole run
                if cli.get("marginal_ips") is not None:   # the goal's measure
                    stats[key.replace("_ips", "_marginal_ips")] = cli["marginal_ips"]
        card["stats"] = stats
        write_card(folder, card)


def format_report(report: dict) -> str:
    head = (f"{'model':<28}{'backend':>10}{'params':>8}{'GFLOPs':>8}{'MB':>7}{'ms/img':>8}"
            f"{'cpu ms':>8}{'img/s':>8}{'x VGG16':>9}{'x torch':>9}")
    lines = [head]
    for r in report["rows"]:
        backend = _on(r)
        lines.append(f"{r['model']:<28}{backend:>10}{r['params'] / 1e6:>7.2f}M"
                     f"{r['flops'] / 1e9:>8.2f}{r.get('weights_mb') or 0:>7.1f}"
                     f"{r['latency_ms']:>8.1f}{r['latency_cpu_ms']:>8.1f}"
                     f"{r['throughput_ips']:>8.1f}"
                     f"{r['speedup_vs_vgg16']:>9.1f}"
                     f"{r['speedup_vs_torch'] if 'speedup_vs_torch' in r else '':>9}")
    for c in report["cli_folder"]:
        lines.append(f"CLI predict, {c['model']} on {_on(c)}, guard "
                     f"{'on' if c.get('guard') else 'off'}: {c.get('marginal_ips')} img/s "
                     f"marginal, {c['throughput_ips']} over the whole run ({c['images']} "
                     f"images in {c['seconds']} s, half in {c.get('half_seconds')} s; "
                     f"{c.get('processes', 1)} process(es), batch {_batch(c)}, "
                     f"{c['errors']} errors; {c['folder']})")
    app = report.get("app_classify_with_heatmap")
    if app:
        lines.append(f"app, warm: decode + guard + classify + Grad-CAM overlay with {app['model']} "
                     f"({_on(app)}): {app['median_ms']} ms median (goal < 2000)")
    single = report.get("single_image_with_guard")
    if single:
        lines.append(f"one image end to end with the guard (decode + guard + classify, "
                     f"{single['model']} on {_on(single)}, guard features on "
                     f"{single['guard_backend']}): {single['median_ms']} ms median")
        if single.get("stages_ms"):
            lines.append("  its stages one at a time (ms, median): " + ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in single["stages_ms"].items()))
    t = report.get("targets") or {}
    if t:
        ok = {True: "met", False: "NOT met"}
        lines.append(f"targets for {t['model']} ({t['backend']}): single image "
                     f"{t['latency_ms']} ms (goal <= {t['latency_target_ms']:g}: "
                     f"{ok[t['met']['latency']]}"
                     + (f"; with the guard {t['latency_guard_ms']} ms: "
                        f"{ok[t['met']['latency_guard']]}" if "latency_guard_ms" in t else "")
                     + f"); {t['speedup_vs_vgg16']}x VGG16 (goal >= "
                     f"{t['speedup_target']:g}x: {ok[t['met']['speedup']]})"
                     + (f"; CLI with the guard {t['cli_ips']} img/s marginal (goal >= {t['cli_target_ips']:g}: "
                        f"{ok[t['met']['cli']]})" if "cli_ips" in t else ""))
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=20, help="single-image runs per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--write-cards", action="store_true",
                        help="store latency and throughput in each model card")
    parser.add_argument("--models", nargs="*", help="model names (default: all shipped)")
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx"],
                        help="default: both")
    parser.add_argument("--cli-images", type=int, default=500,
                        help="images in the CLI folder run (0: the whole dataset; -1: skip)")
    parser.add_argument("--reference-onnx", action="store_true",
                        help="also time VGG16 on ONNX Runtime (a 0.5 GB temporary export)")
    parser.add_argument("--torch-threads", type=int,
                        help="PyTorch intra-op threads (default: torch's own choice); 1 avoids "
                             "OpenMP spin-waits when another process shares the cores")
    parser.add_argument("--out", default="reports/bench.json")
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    report = run(args.repeats, args.batch, args.write_cards, args.models, args.backends,
                 args.cli_images, reference_onnx=args.reference_onnx,
                 cfg=config_from_args(args))
    print(f"torch {report['torch']} ({report['torch_threads']} threads), onnxruntime "
          f"{report.get('onnxruntime', '-')} ({report['onnx_threads']} threads, batches of "
          f"{report['onnx_max_batch'] or 'any size'}); {report['cpu_count']} CPUs, load average "
          f"{report['load_avg_1m'][0]} -> {report['load_avg_1m'][1]} (ms/img: wall; cpu ms: "
          "this process's CPU time per image)")
    print(format_report(report))
    out = resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def add_command(sub, common) -> None:
    """Register ``bench`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("bench", parents=[common], help="size and CPU speed of every shipped model vs VGG16",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
