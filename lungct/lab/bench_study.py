"""How long the Study view makes a radiologist wait: a whole series, then one heatmap.

    python -m lungct lab bench-study [--slices 64] [--model student_kd] [--repeats 3]

(or ``python -m lungct lab bench-study ...``).

Times, warm (model, guard and PyTorch weights loaded by a first run), the case
pipeline on a series of ``--slices`` 512x512 CT slices read from memory
(decode, input guard, batched classification, findings: ``lungct.pipeline.run_case``), the
same without the findings stage (their cost per slice is the difference), and
one Grad-CAM heatmap of the most suspicious slice (``lungct.pipeline.heatmap``).
The series is the first Lung-PET-CT-Dx sample series under
``../shared/data/lung-pet-ct-dx-sample`` when present (real scanner DICOM),
else a synthetic one from the shipped sample slices. Targets (issue 11):
series <= 10 s, heatmap <= 1 s on the 2-core CPU; findings <= 20 ms per slice (issue 23).
"""

from __future__ import annotations

import argparse

import json
import statistics
import time

from lungct.config import config_from_args
from lungct.errors import LungctError

SERIES_TARGET_S, HEATMAP_TARGET_S, FINDINGS_TARGET_MS = 10.0, 1.0, 20.0


def bench_files(n: int) -> tuple[list[tuple[str, bytes]], str]:
    """(name, bytes) of an ``n``-slice series, and where it came from."""
    from lungct.config import REPO_ROOT

    sample = REPO_ROOT.parent / "shared" / "data" / "lung-pet-ct-dx-sample"
    folders = sorted(p for p in sample.glob("Lung_Dx-*") if p.is_dir()) if sample.is_dir() else []
    if folders:
        paths = sorted(folders[0].glob("*.dcm"))[:n]
        if len(paths) == n:
            return [(p.name, p.read_bytes()) for p in paths], f"{folders[0].name} (real DICOM)"
    from lungct.data.demo_series import demo_series
    return [(f"{i}.dcm", d) for i, d in enumerate(demo_series(n, size=512))], \
        "synthetic series from samples/"


def run(slices: int = 64, model: str | None = None, repeats: int = 3, guard: bool = True,
        cfg: dict | None = None) -> dict:
    from lungct.guard import load_guard
    from lungct.pipeline import heatmap, run_case
    from lungct.config import load_config
    from lungct.inference import Classifier

    cfg = load_config() if cfg is None else cfg
    clf = Classifier.from_name(model or cfg["app"]["default_model"], cfg["app"]["unsure_below"],
                               cfg=cfg)
    the_guard = load_guard(cfg=cfg) if guard else None
    files, source = bench_files(slices)
    case = run_case(files, clf, the_guard)          # warm-up (loads the guard's extractor)
    target = max(case.slices, key=lambda r: r.malignant_probability)
    heatmap(clf, target, "Grad-CAM")                 # warm-up (loads the PyTorch weights)
    series_s, heat_s, plain_s = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        run_case(files, clf, the_guard, findings=None)
        plain_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        case = run_case(files, clf, the_guard)
        series_s.append(time.perf_counter() - t)
        target = max(case.slices, key=lambda r: r.malignant_probability)
        t = time.perf_counter()
        heatmap(clf, target, "Grad-CAM")
        heat_s.append(time.perf_counter() - t)
    series_med, heat_med = statistics.median(series_s), statistics.median(heat_s)
    findings_ms = 1000 * (series_med - statistics.median(plain_s)) / max(
        sum(r.findings is not None for r in case.slices), 1)
    return {"model": clf.name, "backend": clf.backend, "guard": guard, "series": source,
            "slices": len(case.slices), "counts": case.counts, "repeats": repeats,
            "series_s": round(series_med, 2), "per_slice_ms": round(1000 * series_med / slices, 1),
            "heatmap_s": round(heat_med, 3),
            "without_findings_s": round(statistics.median(plain_s), 2),
            "findings_ms_per_slice": round(findings_ms, 1),
            "findings": sum(len(r.findings or []) for r in case.slices),
            "met": {"series": series_med <= SERIES_TARGET_S, "heatmap": heat_med <= HEATMAP_TARGET_S,
                    "findings": findings_ms <= FINDINGS_TARGET_MS}}


def add_arguments(parser) -> None:
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--model", help="model name (default: app.default_model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-guard", action="store_true", help="time classification only")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_bench_study)


def cmd_bench_study(args) -> int:
    try:
        r = run(args.slices, args.model, args.repeats, not args.no_guard,
                cfg=config_from_args(args))
    except LungctError as err:   # no guard fitted, no model
        print(f"error: {err} (--no-guard times classification alone)")
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    ok = {True: "met", False: "MISSED"}
    print(f"{r['slices']}-slice series ({r['series']}), model {r['model']} on {r['backend']}, "
          f"guard {'on' if r['guard'] else 'off'}, median of {r['repeats']}:")
    print(f"  decode + {'guard + ' if r['guard'] else ''}classify + findings: {r['series_s']:.2f} s "
          f"({r['per_slice_ms']} ms/slice; target <= {SERIES_TARGET_S:g} s: "
          f"{ok[r['met']['series']]})")
    print(f"  without findings: {r['without_findings_s']:.2f} s; findings "
          f"{r['findings_ms_per_slice']} ms per accepted slice ({r['findings']} findings; target "
          f"<= {FINDINGS_TARGET_MS:g} ms: {ok[r['met']['findings']]})")
    print(f"  Grad-CAM heatmap of one slice: {r['heatmap_s']:.3f} s (target <= "
          f"{HEATMAP_TARGET_S:g} s: {ok[r['met']['heatmap']]})")
    print(f"  slices: {r['counts']}")
    return 0


def add_command(sub, common) -> None:
    """Register ``bench-study`` on the parser of ``lungct.cli``."""
    add_arguments(sub.add_parser("bench-study", parents=[common], help="how long the Study view waits: a series, one heatmap",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))
