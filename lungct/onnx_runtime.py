"""Run an exported ``model.onnx`` with ONNX Runtime: the fast CPU path.

The ONNX file holds the network only and returns raw logits; the
preprocessing contract (input size, mean, std, class order) and the
calibration temperature come from the model card, exactly as for the PyTorch
model, and temperature + softmax are applied here in numpy, so both backends
share one definition of "probability".

Which backend runs is one switch: ``runtime.backend`` in params.yaml
(``auto`` | ``onnx`` | ``torch``), overridden by the environment variable
``LUNGCT_BACKEND``. ``auto`` uses ONNX Runtime when ``onnxruntime`` imports
and ``models/<name>/model.onnx`` exists, is readable, matches the card and
was exported from the current weights; otherwise it falls back to PyTorch
(with a warning when a file was there but unusable). ``onnx`` insists and
raises ``OnnxUnavailable`` instead of falling back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lungct.errors import LungctError

ONNX_FILE = "model.onnx"
BUILD_RECORD = "onnx.json"
"""Written beside model.onnx by every export: both are build outputs (git-ignored), so
building them on a fresh clone never rewrites the tracked model card."""
INT8_FILE = "model.int8.onnx"
INT8_RECORD = "int8.json"
"""The int8 twin of model.onnx and its local build check (build outputs; lungct.training.quantize)."""
CALIBRATION_FILE = "int8_calibration.json"
"""Recorded activation ranges (ONNX Runtime's MinMax calibration cache), tracked beside a
model's card or the guard's: an int8 build is made from them on each machine."""
PRECISIONS = ("int8", "float32")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
BACKENDS = ("auto", "onnx", "torch")
BACKEND_ENV = "LUNGCT_BACKEND"
METADATA_KEY = "lungct_contract"
"""ONNX metadata_props key holding the export's contract and weights hash (JSON)."""


class OnnxUnavailable(LungctError, RuntimeError):
    """The ONNX path cannot be used for this model; the message says why and what to do.

    ``kind``: "no_runtime" (onnxruntime not installed), "no_file" (never
    exported) or "unusable" (corrupt, stale or mismatched file).
    """

    def __init__(self, message: str, kind: str = "unusable"):
        super().__init__(message)
        self.kind = kind


# ------------------------------------------------------------------ settings

PARITY_MAX_DIFF = 1e-3
"""Default of ``runtime.parity_max_diff``: the largest |p_onnx - p_torch| at export that the
runtime accepts (labels must be identical too). See lungct.training.onnx_export.parity_check."""


class RuntimeSettings(NamedTuple):
    backend: str            # auto | onnx | torch
    threads: int            # ONNX Runtime intra-op threads; 0 = its default (one per core)
    max_batch: int          # ONNX Runtime runs bigger batches in chunks of this size; 0 = any
    parity_max_diff: float  # refuse an export whose parity check found a larger |dp|
    precision: str = "float32"  # int8: model.int8.onnx when built and checked here


def runtime_settings(cfg: dict | None = None, backend: str | None = None,
                     threads: int | None = None, precision: str | None = None) -> RuntimeSettings:
    """The ``runtime`` section: explicit arguments > ``cfg`` (``load_config()`` when None, where
    ``LUNGCT_BACKEND`` wins over params.yaml) > defaults."""
    if cfg is None:
        try:
            from lungct.config import load_config
            cfg = load_config()
        except Exception:  # no or unreadable params.yaml (installed package): defaults
            cfg = {}
    section = (cfg or {}).get("runtime") or {}
    if backend:
        chosen, source = backend, "the backend argument"
    else:
        chosen, source = section.get("backend") or "auto", f"runtime.backend or {BACKEND_ENV}"
    chosen = str(chosen).strip().lower()
    if chosen not in BACKENDS:
        raise ValueError(f"unknown inference backend {chosen!r} in {source}; "
                         f"use one of {list(BACKENDS)}")
    n = section.get("threads", 0) if threads is None else threads
    precision = str(precision or section.get("precision") or "float32").strip().lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} in runtime.precision or "
                         f"LUNGCT_PRECISION; use one of {list(PRECISIONS)}")
    return RuntimeSettings(chosen, int(n or 0), int(section.get("max_batch", 0) or 0),
                           float(section.get("parity_max_diff", PARITY_MAX_DIFF)), precision)


def import_onnxruntime():
    """The onnxruntime module, or OnnxUnavailable when it is not installed (or hidden)."""
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxUnavailable(f"onnxruntime is not installed ({err})", "no_runtime") from None
    return onnxruntime


# ------------------------------------------------------------------ writing

def save_onnx(module, size: int, path: str | Path, outputs: list[str], key: str, meta: dict,
              opset: int = OPSET) -> Path:
    """Export ``module`` on a (N, 3, size, size) input named ``input`` (batch axis dynamic)
    to ``path`` with ``meta`` as JSON under metadata ``key``: checked, then renamed into
    place, so a crash never leaves a half-written file behind. The TorchScript exporter
    (the dynamo one needs onnxscript)."""
    import warnings

    import onnx
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings():
            # the legacy-exporter deprecation notice, and timm's trace-time size asserts
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), torch.zeros(2, 3, size, size), str(tmp),
                              input_names=[INPUT_NAME], output_names=list(outputs),
                              dynamic_axes={k: {0: "batch"} for k in [INPUT_NAME, *outputs]},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(meta)
        proto.producer_name = "lungct"
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------ numeric helpers

def calibrated_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) row-wise, float32 (computed in float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def contract_of(card: dict) -> dict:
    """The part of a card an ONNX file must agree with."""
    return {"classes": list(card["classes"]), "input_size": int(card["input_size"]),
            "view": card.get("view", "full"),
            "mean": [float(v) for v in card["mean"]], "std": [float(v) for v in card["std"]]}


# ------------------------------------------------------------------- session

class OnnxModel:
    """An ONNX Runtime session over one exported model: ``logits = m(x)`` for (N, 3, S, S).

    Batches above ``max_batch`` run in chunks: on small-cache CPUs the cost per
    image grows with the batch (EfficientNet-Lite0, 224 px, one thread: about
    5 ms CPU per image at batch 1-4, 7.4 ms at batch 32).
    """

    def __init__(self, session, path: Path, threads: int = 0, max_batch: int = 0):
        self.session = session
        self.path = Path(path)
        self.threads = threads
        self.max_batch = max_batch
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.precision = "float32"
        self._beside: OnnxModel | None = None
        self._lock = threading.Lock()

    def beside(self) -> "OnnxModel":
        """The same network on a one-thread session, opened on first use: for a forward pass
        that runs beside other work (a lone slice's guard, ``lungct.pipeline.analyse_one``).
        On 2 cores a guarded slice took 13.1-15.0 ms this way and 12.3-17.4 ms with two
        threads fighting the guard for the cores (ad-hoc ``run_case`` timing, six samples)."""
        if self.threads == 1:
            return self
        with self._lock:  # app sessions share one classifier: open it once
            if self._beside is None:
                beside = open_session(self.path, 1)
                beside.precision = self.precision
                self._beside = beside
        return self._beside

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.max_batch if self.max_batch > 0 else len(x)
        if len(x) <= step:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        return np.concatenate([self.session.run([self.output_name],
                                                {self.input_name: x[i:i + step]})[0]
                               for i in range(0, len(x), step)])


def side_threads() -> int:
    """Intra-op threads of the guard's network when ``runtime.threads`` is 0: half the CPUs.

    A lone slice runs the guard beside the classifier's forward pass
    (``lungct.pipeline.analyse_one``); a guard session that takes every core fights
    the classifier for them.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def session_options(ort, threads: int = 0):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads > 0:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    # No busy-waiting between ops: on a small shared CPU, spinning workers starve
    # the decode thread and other processes (measured: 2 threads, busy 2-core
    # machine, 13 ms -> 5.5 ms per image without spinning).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def open_session(path: str | Path, threads: int = 0, max_batch: int = 0,
                 source: bytes | None = None) -> OnnxModel:
    """An OnnxModel for a file (or its bytes); OnnxUnavailable with the reason on any failure."""
    ort = import_onnxruntime()
    path = Path(path)
    if source is None and not path.is_file():
        raise OnnxUnavailable(f"{path} not found", "no_file")
    try:
        session = ort.InferenceSession(source if source is not None else str(path),
                                       sess_options=session_options(ort, threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidProtobuf/... types
        text = " ".join(str(err).split())
        text = text if len(text) <= 200 else text[:197] + "..."
        raise OnnxUnavailable(f"{path} is corrupt or not a valid ONNX model "
                              f"({type(err).__name__}: {text})") from None
    return OnnxModel(session, path, threads, max_batch)


def export_record(folder: str | Path, card: dict) -> dict:
    """The export record (contract, parity) that belongs to the ``model.onnx`` now on disk.

    The card's ``onnx`` section is the record made when the model shipped;
    ``onnx.json`` is the one of the last local build. Whichever names the
    file's own SHA-256 applies; an empty dict when neither does.
    """
    folder = Path(folder)
    path = folder / ONNX_FILE
    if not path.exists():
        return {}
    sha = file_sha256(path)
    candidates = [card.get("onnx") or {}]
    record = folder / BUILD_RECORD
    if record.exists():
        try:
            candidates.append(json.loads(record.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
    for section in candidates:
        if isinstance(section, dict) and section.get("onnx_sha256") == sha:
            return section
    return {}


def int8_build(folder: str | Path) -> Path | None:
    """``model.int8.onnx`` when it was built here from the ``model.onnx`` now on disk and
    passed its check against it (``int8.json``); None otherwise."""
    folder = Path(folder)
    path, record = folder / INT8_FILE, folder / INT8_RECORD
    if not (path.exists() and record.exists()):
        return None
    try:
        section = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not (section.get("check") or {}).get("passed")
            or section.get("onnx_sha256") != file_sha256(path)
            or section.get("float32_sha256") != file_sha256(folder / ONNX_FILE)):
        return None
    return path


def load_onnx(folder: str | Path, card: dict, threads: int = 0, max_batch: int = 0,
              parity_max_diff: float = PARITY_MAX_DIFF, precision: str = "float32") -> OnnxModel:
    """The checked ONNX model of a model folder.

    ``precision="int8"`` opens ``model.int8.onnx`` instead when :func:`int8_build`
    vouches for it (same contract and weights checks); float32 otherwise.

    Raises OnnxUnavailable when onnxruntime is missing, the file is missing,
    unreadable or corrupt, its contract differs from the card, it was
    exported from other weights than the folder's ``model.safetensors``, or
    the card's parity check found a different label or a probability more
    than ``parity_max_diff`` away from PyTorch's.
    """
    folder = Path(folder)
    path = folder / ONNX_FILE
    redo = f"re-export it with `python -m lungct lab export --model {folder.name}`"
    import_onnxruntime()
    if not path.exists():
        raise OnnxUnavailable(f"{path} not found (`python -m lungct lab export --model "
                              f"{folder.name}` writes it)", "no_file")
    # the int8 twin carries model.onnx's metadata, so the checks below read either
    quantized = int8_build(folder) if precision == "int8" else None
    model = open_session(quantized or path, threads, max_batch)
    if quantized is not None:
        model.precision = "int8"
    meta = model.session.get_modelmeta().custom_metadata_map or {}
    try:
        exported = json.loads(meta[METADATA_KEY])
    except (KeyError, ValueError):
        raise OnnxUnavailable(f"{path} has no lungct contract in its metadata "
                              f"(not written by lungct lab export); {redo}") from None
    try:
        want = contract_of(card)
    except (KeyError, TypeError, ValueError) as err:
        raise OnnxUnavailable(f"the card of {folder} lacks the preprocessing contract "
                              f"({err})") from None
    got = {k: exported.get(k, "full" if k == "view" else None) for k in want}
    if got != want:
        diff = sorted(k for k in want if got[k] != want[k])
        raise OnnxUnavailable(f"{path} does not match its card (differs in {diff}); {redo}")
    weights = folder / "model.safetensors"
    if weights.exists() and exported.get("weights_sha256") != file_sha256(weights):
        raise OnnxUnavailable(f"{path} was exported from other weights than {weights} "
                              f"(the model was retrained since); {redo}")
    parity = export_record(folder, card).get("parity") or {}
    if parity and (parity.get("labels_identical") is False
                   or float(parity.get("max_abs_diff", 0.0)) > parity_max_diff
                   or (parity.get("passed") is False and "max_abs_diff" not in parity)):
        raise OnnxUnavailable(f"{path} failed its parity check against PyTorch at export "
                              f"(labels identical: {parity.get('labels_identical')}, max |dp| "
                              f"{parity.get('max_abs_diff')}, allowed {parity_max_diff:g})")
    shape = model.session.get_inputs()[0].shape
    size = want["input_size"]
    if len(shape) != 4 or list(shape[1:]) != [3, size, size]:
        raise OnnxUnavailable(f"{path} expects input shape {shape}, not (N, 3, {size}, {size}); "
                              f"{redo}")
    return model
