"""What ``make onnx`` builds ahead, built on first use instead: a plain ``pip install -e .``
has no build step, and without these files the default model and the input guard run on
PyTorch, several times slower. Cheap checks here; the builders (``onnx_export``,
``guard_fit``, which import PyTorch) load only when something is missing.
"""

from __future__ import annotations

import sys
from typing import Callable


def ensure_model_export(name_or_path, cfg: dict, backend: str | None = None,
                        log=None) -> bool:
    """Export a model to ONNX (with its int8 twin where its ranges are tracked) on first
    use, when ``model.onnx`` is missing: what ``make onnx`` does ahead. A plain
    ``pip install -e .`` has no build step, and the model would otherwise run on PyTorch,
    several times slower. Returns whether it exported; a failure leaves PyTorch serving,
    with one line saying why.

    Only the default model of the models folder (``app.default_model``), as ``make onnx``:
    others, and folders given by path, are exported by ``lungct lab export --model``
    (exporting every model on a first visit of the comparison page would take minutes).
    Nothing is exported when PyTorch is asked for (``backend`` or ``runtime.backend``),
    onnxruntime is missing, or the folder has no weights (a name that does not resolve is
    left for the loader).
    """
    from lungct.config import models_dir
    from lungct.models.checkpoint import WEIGHTS_FILE, resolve_model_dir
    from lungct.onnx_runtime import (ONNX_FILE, OnnxUnavailable, import_onnxruntime,
                                     runtime_settings)

    log = log or (lambda text: print(text, file=sys.stderr))
    try:
        folder = resolve_model_dir(name_or_path)
    except Exception:
        return False
    if (folder / ONNX_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        return False
    if (folder.resolve().parent != models_dir(cfg).resolve()
            or folder.name != cfg["app"]["default_model"]):
        return False
    if (backend or runtime_settings(cfg).backend) == "torch":
        return False
    try:
        import_onnxruntime()
    except OnnxUnavailable:
        return False
    log(f"exporting {folder.name} to ONNX once (first use; `make onnx` does it ahead)...")
    from lungct.training import onnx_export
    try:
        section = onnx_export.export_model(folder, cfg)
    except Exception as err:   # a read-only folder, an operator ONNX cannot express
        log(f"note: {folder.name} could not be exported ({type(err).__name__}); it runs on "
            "PyTorch")
        return False
    return bool(section["parity"]["passed"])


def ensure_exports(guard, log: Callable[[str], None] | None = None) -> bool:
    """Build the guard's ONNX Runtime extractor (and its int8 twin) on first use, when it
    is missing: what ``make onnx`` does ahead. Without it the guard runs on PyTorch,
    about 2.5x slower (a plain ``pip install -e .`` has no build step). Returns whether
    it built; a failure leaves the guard on PyTorch with one line saying why.

    Nothing is built when the runtime backend is forced to PyTorch, onnxruntime is
    missing, or the guard has no folder.
    """
    from lungct.guard import InputGuard
    from lungct.guard.features import EXTRACTOR_FILE
    from lungct.onnx_runtime import OnnxUnavailable, import_onnxruntime, runtime_settings

    log = log or (lambda text: print(text, file=sys.stderr))
    if not isinstance(guard, InputGuard) or guard.folder is None \
            or (guard.folder / EXTRACTOR_FILE).exists():
        return False
    if runtime_settings().backend == "torch":
        return False
    try:
        import_onnxruntime()
    except OnnxUnavailable:
        return False
    log("building the input guard's ONNX extractor once (first use; `make onnx` does it "
        "ahead)...")
    from lungct.training import guard_fit
    try:
        record, _ = guard_fit.build_exports(guard)
    except Exception as err:   # a read-only folder, a missing exporter: PyTorch still works
        log(f"note: the guard's ONNX extractor could not be built ({type(err).__name__}); "
            "the guard runs on PyTorch")
        return False
    return bool(record["passed"])
