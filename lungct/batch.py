"""Many files, one result row each, in input order: the path behind ``predict`` and its benchmark.

Files are classified in batches through the case pipeline
(``lungct.case.iter_results``): a background thread pool reads and decodes
the next files (a bounded look-ahead) while the model runs on the current
batch, so decoding overlaps inference. A bad file gives
``{"file", "error"}`` and the rest go on.

Below the command line on purpose: ``python -m lungct predict`` prints these
rows and ``lungct.bench`` times them, so both run the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

from lungct.data.discover import IMAGE_SUFFIXES


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, and the image files inside any folder (sorted)."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and
                              (f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == "")))
        else:
            out.append(p)
    return out


def error_reason(err: Exception) -> str:
    """The short text of an error: an OS error's own words (``No such file or directory``)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _reader(path: Path) -> Callable:
    """A zero-argument loader of ``path`` (run in a decode thread); read errors become text."""
    from lungct.series import SliceFile, read_slice

    def read():
        try:
            return read_slice(str(path), path.read_bytes())
        except OSError as err:
            return SliceFile(name=str(path), error=error_reason(err))
    return read


def result_row(path: Path, r) -> dict:
    """The record of one ``lungct.case.SliceResult``: the file, then result or error."""
    row = ({"file": str(path), **r.prediction.as_dict()} if r.ok
           else {"file": str(path), "error": r.error})
    if r.guard is not None:
        row["ood"] = r.guard
    if r.ok and r.warning:
        row["warning"] = r.warning
    if r.status in ("refused", "outside_lungs"):
        row["rejected"] = True
        if r.status == "outside_lungs":
            row["outside_lungs"] = True
    return row


def predict_paths(clf, paths: list[Path], window: str = "lung", batch_size: int = 32,
                  workers: int = 1, progress: bool | None = None,
                  guard=None) -> Iterator[dict]:
    """One result dict per path, in order: ``{"file", **prediction}`` or ``{"file", "error"}``.

    The case pipeline (``lungct.case.iter_results``) runs underneath: files are
    read and decoded ``workers`` threads ahead of the model, each batch of
    ``batch_size`` is screened by the ``OODGuard`` (when given) and classified
    in one forward pass. With a guard, results carry ``"ood"`` (its verdict),
    and a refused slice gets ``{"file", "error", "rejected": true, "ood"}``.
    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    from tqdm import tqdm

    from lungct.case import iter_results

    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, mininterval=0.5,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        results = iter_results(clf, [_reader(p) for p in paths], len(paths), guard, window,
                               batch_size, workers, keep_pixels=False)
        for path, r in zip(paths, results):
            bar.update(1)
            yield result_row(path, r)
    finally:
        bar.close()
