"""The stages run in batches: one slice-to-case pipeline for the app, the CLI, the
benchmarks and the PACS integration.

    files -> read once (series) -> decode -> segment -> guard -> batched classification
    (+ caution) -> findings -> case verdict under a stated rule; heatmaps on demand (explain).

Decoding and segmentation run ahead in threads (``prefetch``); the guard and the
model score a batch at once; one slice alone (an upload) runs its guard beside its
forward pass (``classify.analyse_one``).

>>> import lungct
>>> case = lungct.run_case(["study_folder/"], lungct.Classifier.from_name("student_kd"),
...                        guard=lungct.load_guard())                # doctest: +SKIP
>>> case.verdict["label"], case.counts                               # doctest: +SKIP

Each slice ends in one of four states (``SliceResult.status``):
``classified`` (label and probabilities), ``outside_lungs`` (the guard says
it is CT but neck or abdomen: never called normal, never an error),
``refused`` (not a lung CT image, or a non-CT DICOM modality) or ``error``
(unreadable). Only classified slices vote in the case verdict.

Privacy: results keep the user's file name for their own screen
(``SliceResult.name``); :meth:`SliceResult.as_dict` and :meth:`Case.as_dict`,
which every export uses, carry positions only. No patient tag is read.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lungct import MALIGNANT_THRESHOLD
from lungct.pipeline.classify import analyse_one, classify
from lungct.pipeline.decode import decode
from lungct.pipeline.findings import findings_scorer, locate, locate_series, series_lesions
from lungct.pipeline.guard import screen
from lungct.pipeline.protocols import SliceClassifier, SliceGuard
from lungct.pipeline.segment import prepare_inputs
from lungct.pipeline.series import Series, SliceFile, Study, load_study
from lungct.pipeline.slices import SliceResult, failure_text
from lungct.pipeline.verdict import REFUSED_RULE, case_verdict, counts
from lungct.preprocess import MAX_PIXELS, InvalidImageError


def prefetch(items: Iterable, fn: Callable, workers: int = 1, ahead: int = 64) -> Iterator:
    """``fn(item)`` for each item, in order, computed up to ``ahead`` items in advance.

    Work runs in a thread pool of ``workers`` threads (Pillow, pydicom's numpy
    and numpy release the GIL, so decoding overlaps the model's forward pass);
    at most ``ahead`` results wait in memory. Exceptions are re-raised at the
    item's turn. ``workers`` 0: in this thread, one item at a time (a worker
    process of ``lungct.pipeline.batch`` has one core and nothing to overlap).
    """
    if workers < 1:
        yield from map(fn, items)
        return
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lungct-decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            yield pending.popleft().result()
            for item in items:
                pending.append(pool.submit(fn, item))
                break


def iter_results(classifier: SliceClassifier, sources: Iterable, total: int,
                 guard: SliceGuard | None = None, window: str = "lung",
                 batch_size: int = 32, workers: int = 1, max_pixels: int = MAX_PIXELS,
                 keep_pixels: bool = True, examples: bool = False,
                 findings="shipped") -> Iterator[SliceResult]:
    """Results in input order, batch by batch: decode and segment (``workers`` threads
    ahead), guard, classify, findings (``findings``: see ``findings_scorer``).

    ``sources``: ``SliceFile`` objects or zero-argument callables returning one
    (so files are read in the worker threads). ``keep_pixels=False`` drops
    each slice's pixels and segmentation once classified (folder runs of thousands of
    files); otherwise the slice keeps them for heatmaps and outlines.
    """
    def read(item) -> SliceResult:
        index, source = item
        try:
            sf = source() if callable(source) else source
        except Exception as err:
            return SliceResult(index, total, error=failure_text(err))
        example = os.path.basename(sf.name) if examples else None
        r = decode(sf, index, total, window, max_pixels, example, keep_hu=keep_pixels)
        sf.dataset = sf.data = None
        return r

    def load(item) -> SliceResult:
        r = read(item)
        prepare_inputs(r, classifier, guard)
        return r

    scorer = findings_scorer(findings)

    def done(out: list[SliceResult]) -> list[SliceResult]:
        locate(out, scorer)
        for r in out:
            r.guard_input = r.model_input = r.guard_gray = None
            if not keep_pixels:
                r.gray = r.seg = r.hu = None
        return out

    if total == 1:  # one slice (an upload, one file): latency, not throughput
        for item in enumerate(sources, start=1):
            r = read(item)
            analyse_one(r, classifier, guard)
            yield from done([r])
        return

    batch: list[SliceResult] = []

    def flush() -> list[SliceResult]:
        screen(guard, batch)
        classify(classifier, batch)
        out = list(batch)
        batch.clear()
        return done(out)

    for r in prefetch(enumerate(sources, start=1), load, workers, ahead=2 * batch_size):
        batch.append(r)
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def analyse_slices(classifier, files: list[SliceFile], guard=None, window: str = "lung",
                   batch_size: int = 32, max_pixels: int = MAX_PIXELS,
                   examples: bool = False, findings="shipped") -> list[SliceResult]:
    """``iter_results`` for files already read, in the given order."""
    return list(iter_results(classifier, files, len(files), guard, window, batch_size,
                             max_pixels=max_pixels, examples=examples, findings=findings))


def weights_digest(folder, length: int = 12) -> str | None:
    """First ``length`` hex digits of the weights file's SHA-256, None when absent
    (hashed once per file version: every case names its model's version)."""
    from lungct.models.checkpoint import WEIGHTS_FILE
    from lungct.onnx_runtime import file_sha256

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        return None
    return file_sha256(path)[:length]


def model_version(folder, card: dict) -> str:
    """lungct version, creation time and a short hash of the weights file."""
    parts = [f"lungct {card['lungct_version']}"] if card.get("lungct_version") else []
    if card.get("created"):
        parts.append(f"trained {card['created']}")
    digest = weights_digest(folder) if folder else None
    if digest:
        parts.append(f"weights sha256 {digest}")
    return ", ".join(parts) or "unknown version"


def model_info(classifier: SliceClassifier) -> dict:
    """Name and version of the model behind ``classifier`` (card and weights hash)."""
    card = classifier.card or {}
    return {"name": classifier.name, "version": model_version(classifier.folder, card),
            "backend": classifier.backend}


@dataclass
class Case:
    """A classified series: its slices in order, the verdict, and what was left out."""

    slices: list[SliceResult]
    series: dict
    model: dict
    problems: list[dict] = field(default_factory=list)   # unreadable files: {"file", "error"}
    other_series: list[dict] = field(default_factory=list)
    threshold: float = MALIGNANT_THRESHOLD
    lesions: dict | None = None
    """Findings linked across slices (``lungct.findings.link_series``), when the stage ran."""

    @property
    def verdict(self) -> dict | None:
        return case_verdict(self.slices, self.threshold)

    @property
    def counts(self) -> dict[str, int]:
        return counts(self.slices)

    @property
    def label(self) -> str:
        v = self.verdict
        return v["label"] if v else "refused"

    def as_dict(self) -> dict:
        """The exportable case: positions, results, series facts, model; no names or tags."""
        v = self.verdict
        return {"verdict": v["label"] if v else "refused",
                "rule": v["rule"] if v else REFUSED_RULE,
                "unsure": bool(v["unsure"]) if v else None,
                "deciding_slice": v["deciding_position"] if v else None,
                "counts": self.counts,
                "slices": [r.as_dict() for r in self.slices],
                "series": self.series, "other_series": self.other_series,
                "unreadable_files": len(self.problems), "model": self.model,
                **({"lesions": self.lesions} if self.lesions is not None else {})}


def classify_series(classifier, series: Series, guard=None, window: str = "lung",
                    batch_size: int = 32, max_pixels: int = MAX_PIXELS,
                    study: Study | None = None, examples: bool = False,
                    findings="shipped") -> Case:
    """Run the pipeline on one series (its files in anatomical order)."""
    results = analyse_slices(classifier, series.files, guard, window, batch_size, max_pixels,
                             examples, findings=None)
    flat = locate_series(results, findings_scorer(findings))
    lesions = series_lesions(results)
    if flat and lesions is not None and not lesions["note"]:   # else the note says it already
        lesions["note"] = f"findings closed per slice (2D), not over the series: {flat}"
    others = [s.info() for s in (study.series if study else []) if s is not series]
    problems = [{"file": p.name, "error": p.error} for p in (study.problems if study else [])]
    return Case(results, series.info(), model_info(classifier), problems, others,
                lesions=lesions)


def run_case(inputs: Iterable, classifier, guard=None, window: str = "lung",
             series: int | str | None = None, cfg: dict | None = None,
             batch_size: int = 32, max_pixels: int = MAX_PIXELS, findings="shipped") -> Case:
    """Paths (files, folders, .zip) or ``(name, bytes)`` pairs -> a classified ``Case``.

    ``series`` picks one series of a multi-series input (index or
    SeriesInstanceUID); default: ``Study.default()``. Raises ``ValueError``
    when the input holds no readable image at all (the message lists why).
    """
    study = load_study(inputs, cfg)
    chosen = study.pick(series)
    if chosen is None:
        reasons = sorted({p.error for p in study.problems if p.error})
        raise InvalidImageError("no readable image in the input"
                                + (f": {'; '.join(reasons[:5])}" if reasons else ""))
    return classify_series(classifier, chosen, guard, window, batch_size, max_pixels, study,
                           findings=findings)
