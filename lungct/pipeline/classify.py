"""Stage 4, classify: a batched forward pass over the accepted slices, then the one rule.

Each prediction is relabelled by ``lungct.slice_label`` (the case verdict's
rule) and given its caution (``lungct.pipeline.caution``). One slice alone
(an upload) takes ``analyse_one``: its forward pass beside the guard.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

from lungct import slice_label
from lungct.pipeline.caution import Cautions, cautions, slice_caution
from lungct.pipeline.guard import screen
from lungct.pipeline.protocols import SliceClassifier, SliceGuard
from lungct.pipeline.segment import guarded, model_input, prepare_inputs
from lungct.pipeline.slices import SliceResult, failure_text


@contextmanager
def model_guarded(classifier: SliceClassifier):
    """Hold the model's CAM lock while classifying with PyTorch.

    While another session computes a heatmap, the shared model carries
    pytorch-grad-cam hooks that record every forward pass; a classification
    running at that moment would feed its activations into that heatmap.
    An ONNX session carries no hooks.
    """
    if classifier.backend != "torch" or classifier.model is None:
        yield
        return
    from lungct.explain import model_lock
    with model_lock(classifier.model):
        yield


def classify(classifier: SliceClassifier, results: list[SliceResult]) -> None:
    """Classify every decoded, accepted slice of ``results`` in one batch."""
    todo = [r for r in results if r.gray is not None and r.error is None]
    if not todo:
        return
    try:
        arrays = [r.model_input if r.model_input is not None else model_input(r, classifier)
                  for r in todo]
        with model_guarded(classifier):
            preds = classifier.predict_prepared(arrays)
    except Exception:
        if len(todo) == 1:
            todo[0].error, todo[0].prediction = failure_text(RuntimeError()), None
            return
        for r in todo:   # find the one slice that breaks the batch
            classify(classifier, [r])
        return
    caution = cautions(classifier)
    for r, p in zip(todo, preds):
        attach(r, p, caution)


def attach(r: SliceResult, p, caution: Cautions) -> None:
    """Give the slice its prediction under the one rule, and its caution."""
    label = slice_label(p.probabilities)
    if label != p.label:   # a classifier that labels by argmax: the one rule decides
        p.label, p.unsure = label, True
    r.prediction = p
    r.caution = slice_caution(r, caution)
    if r.caution:
        p.unsure = True
        r.warning = f"{r.warning}; {r.caution}" if r.warning else r.caution


_SIDE = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lungct-guard")
"""Runs a lone slice's guard beside its forward pass (``analyse_one``); shared by sessions."""


def analyse_one(r: SliceResult, classifier: SliceClassifier,
                guard: SliceGuard | None = None) -> None:
    """Segment, guard and classify one decoded slice, for latency: what a batch does, with
    the two halves side by side.

    A full-view model needs no segmentation, so its forward pass runs here
    while the segmentation, the guard's lung view and score run in a second
    thread (ONNX Runtime, OpenCV and most of numpy release the GIL): one slice
    costs the longer half instead of both. A slice the guard refuses loses its
    prediction before anything returns. A lung-view model needs the
    segmentation first, so it runs the halves in turn, as a batch does.
    """
    if (not guarded(r, guard) or classifier.view == "lungs"
            or r.gray is None or r.error is not None):
        prepare_inputs(r, classifier, guard)
        screen(guard, [r])
        classify(classifier, [r])
        return

    def check() -> None:
        prepare_inputs(r, None, guard)
        screen(guard, [r])

    checked = _SIDE.submit(check)
    try:
        with model_guarded(classifier):
            prediction = classifier.predict_beside([classifier.prepare(r.gray)])[0]
    except Exception:
        prediction = None
    checked.result()
    if prediction is None:  # classify redoes it and reports the failure
        classify(classifier, [r])
    elif r.gray is not None and r.error is None:
        attach(r, prediction, cautions(classifier))


def reclassify(r: SliceResult, classifier: SliceClassifier) -> SliceResult:
    """The same classified slice (decoded, segmented, guarded and with its findings) under
    another model, for comparing models: a copy with that model's prediction and caution."""
    warning = r.warning
    if r.caution and warning:   # the first model's caution goes; the new one is added
        warning = warning.removesuffix(r.caution).removesuffix("; ") or None
    out = replace(r, prediction=None, caution=None, warning=warning, model_input=None)
    classify(classifier, [out])
    return out
