"""Many files, one result row each, in input order: the path behind ``predict`` and its benchmark.

Files are classified in batches through the case pipeline
(``lungct.pipeline.iter_results``): a background thread pool reads and decodes
the next files (a bounded look-ahead) while the model runs on the current
batch, so decoding overlaps inference. A bad file gives
``{"file", "error"}`` and the rest go on.

Below the command line on purpose: ``python -m lungct predict`` prints these
rows and ``lungct.lab.bench`` times them, so both run the same code.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from lungct.pipeline.series import folder_files
from lungct.pipeline.slices import ACCEPTED_EXTENSIONS

PROCESS_BATCH = 8
"""Slices per forward pass in each worker process. Two processes on 2 cores with the
guarded int8 default: batches of 8 gave 90-102 images/s, of 16 gave 78-85 (two processes'
activations of 16 slices at 320 px no longer fit the caches; ad-hoc timing, 200 slices)."""
MIN_PARALLEL_FILES = 64
"""Fewer files run in this process: forking and the workers' first batch cost about 0.5 s."""


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, and the image files inside any folder (``series.folder_files``)."""
    out = []
    for item in items:
        p = Path(item)
        out.extend(folder_files(p, ACCEPTED_EXTENSIONS) if p.is_dir() else [p])
    return out


def error_reason(err: Exception) -> str:
    """The short text of an error: an OS error's own words (``No such file or directory``)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _reader(path: Path) -> Callable:
    """A zero-argument loader of ``path`` (run in a decode thread); read errors become text."""
    from lungct.pipeline.series import SliceFile, read_slice

    def read():
        try:
            return read_slice(str(path), path.read_bytes())
        except OSError as err:
            return SliceFile(name=str(path), error=error_reason(err))
    return read


def result_row(path: Path, r) -> dict:
    """The record of one ``lungct.pipeline.SliceResult``: the file, then result or error."""
    row = ({"file": str(path), **r.prediction.as_dict()} if r.ok
           else {"file": str(path), "error": r.error})
    if r.guard is not None:
        row["ood"] = r.guard
    if r.ok and r.warning:
        row["warning"] = r.warning
    if r.ok and r.caution:
        row["caution"] = r.caution
    if r.findings is not None:
        row["findings"] = [f.as_dict() for f in r.findings]
    if r.status in ("refused", "outside_lungs"):
        row["rejected"] = True
        if r.status == "outside_lungs":
            row["outside_lungs"] = True
    return row


def parallel_processes(n_files: int, requested: int | None = None) -> int:
    """How many worker processes a run of ``n_files`` files uses.

    ``requested`` (None: one per CPU this process may use) when the platform
    forks (Linux) and there are at least :data:`MIN_PARALLEL_FILES` files; 1
    otherwise. Why processes: the per-slice work before the forward passes
    (decoding, segmentation, views: about 10 CPU-ms of numpy, scipy and Pillow)
    holds Python's GIL often enough that two threads ran it only 1.5x as fast as
    one, and a folder's throughput stayed at 62-76 images/s on 2 cores.
    """
    if requested is not None and requested < 1:
        raise ValueError("--processes must be at least 1")
    if n_files < MIN_PARALLEL_FILES or sys.platform != "linux":
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(requested or cpus or 1, n_files // PROCESS_BATCH))


def predict_paths(clf, paths: list[Path], window: str = "lung", batch_size: int = 32,
                  workers: int = 1, progress: bool | None = None,
                  guard=None, processes: int = 1, findings="shipped") -> Iterator[dict]:
    """One result dict per path, in order: ``{"file", **prediction}`` or ``{"file", "error"}``.

    The case pipeline (``lungct.pipeline.iter_results``) runs underneath: files are
    read and decoded ``workers`` threads ahead of the model, each batch of
    ``batch_size`` is screened by the ``OODGuard`` (when given) and classified
    in one forward pass. With a guard, results carry ``"ood"`` (its verdict),
    and a refused slice gets ``{"file", "error", "rejected": true, "ood"}``.
    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    ``findings``: the findings stage (``lungct.pipeline.findings_scorer``); rows of accepted
    slices then carry ``"findings"``.

    ``processes`` > 1 (``parallel_processes``): forked worker processes run the
    same pipeline on batches of :data:`PROCESS_BATCH` files each, and the rows
    still come out in input order. Only for an ONNX Runtime classifier loaded
    with one thread (``runtime.threads`` 1): its sessions own no thread pool
    that a fork would break. Anything else runs here, in this process.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, mininterval=0.5,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        if forked_processes(clf, guard, processes) > 1:
            rows = _forked_rows(clf, guard, paths, window, min(batch_size, PROCESS_BATCH),
                                processes, findings)
        else:
            rows = _rows(clf, guard, paths, window, batch_size, workers, findings)
        for row in rows:
            bar.update(1)
            yield row
    finally:
        bar.close()


def _rows(clf, guard, paths: list[Path], window: str, batch_size: int,
          workers: int, findings="shipped") -> Iterator[dict]:
    from lungct.pipeline.case import iter_results

    results = iter_results(clf, [_reader(p) for p in paths], len(paths), guard, window,
                           batch_size, workers, keep_pixels=False, findings=findings)
    for path, r in zip(paths, results):
        yield result_row(path, r)


def forked_processes(clf, guard, processes: int) -> int:
    """The worker processes ``predict_paths`` runs for ``processes``: that many when they may
    be forked from here with these models (ONNX Runtime sessions of one thread each, which
    own no thread pool a fork would break, on a platform that forks), else 1."""
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    onnx = clf.onnx_model if clf.backend == "onnx" else None
    ok = (onnx is not None and onnx.threads == 1
          and (guard is None or (guard.threads == 1 and guard.backend == "onnx")))
    return processes if ok else 1


_WORK: tuple | None = None
"""(classifier, guard, window, batch size, findings scorer) of the run being forked: the children inherit
it, so nothing is pickled but file paths and result rows."""


@contextmanager
def _opencv_pool_stopped():
    """OpenCV's thread pool stopped while worker processes are forked, restarted after.

    A forked child inherits the pool's locks and condition variables but not its
    threads: the child's first parallel OpenCV call, or a ``cv2.setNumThreads``
    there, then waits for threads that do not exist (a hang, seen after the
    parent had smoothed a slice). With the pool stopped before the fork, each
    child starts with one OpenCV thread and no pool, which is what one pipeline per
    process wants.
    """
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _chunk_rows(chunk: list[Path]) -> list[dict]:
    """A worker's share: one batch of files through the case pipeline, as rows."""
    clf, guard, window, batch_size, scorer = _WORK
    try:
        return list(_rows(clf, guard, chunk, window, batch_size, 0, scorer))
    except Exception as err:   # a bug, not a bad file: every file of the batch says so
        return [{"file": str(p), "error": f"the worker process failed ({type(err).__name__}: "
                                          f"{str(err)[:200]})"} for p in chunk]


def _forked_rows(clf, guard, paths: list[Path], window: str, batch_size: int,
                 processes: int, findings="shipped") -> Iterator[dict]:
    global _WORK
    from lungct.pipeline.findings import findings_scorer

    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    _WORK = (clf, guard, window, batch_size, findings_scorer(findings))   # loaded once, here
    with _opencv_pool_stopped():
        pool = multiprocessing.get_context("fork").Pool(processes)
    try:
        for rows in pool.imap(_chunk_rows, chunks):
            yield from rows
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        _WORK = None
