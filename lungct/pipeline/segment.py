"""Stage 3, segment: one ``lungct.lungs.Segmentation`` per slice, and the inputs made from it.

The segmentation is made once, of the rendering the guard judges (for DICOM
the lung window, on the same pixel grid as the user's window), and carried on
the slice (``SliceResult.seg``): the guard's lung view and body check, a
lung-view model's crop, the findings, the heatmaps and the lung outline all
use it. Done in the decode threads, ahead of the batch: segmentation, lung
views and resizing are numpy/scipy/Pillow work that overlaps the batched
forward passes.
"""

from __future__ import annotations

from lungct.lungs import segment
from lungct.pipeline.decode import guard_view
from lungct.pipeline.protocols import SliceClassifier, SliceGuard
from lungct.pipeline.slices import SliceResult


def segment_slice(r: SliceResult) -> None:
    """Set ``r.seg`` (once) and ``r.lung_window`` for a decoded slice."""
    if r.seg is not None or r.gray is None or r.error is not None:
        return
    r.seg = segment(guard_view(r))
    if r.guard_gray is None:   # the model sees the rendering that was segmented
        r.lung_window = r.seg.grey_lungs


def guarded(r: SliceResult, guard: SliceGuard | None) -> bool:
    """Whether the guard judges this slice's pixels (a non-CT DICOM is refused by its tag)."""
    return guard is not None and not (r.is_dicom and r.modality and r.modality != "CT")


def prepare_inputs(r: SliceResult, classifier: SliceClassifier | None,
                   guard: SliceGuard | None = None) -> None:
    """Segment the slice and make the guard's and the classifier's inputs from it. Without
    a guard, a full-view model needs no segmentation: the findings stage and the heatmaps
    make it when they run (``segment_slice``), once.

    Any failure here is left for the guard and classify stages to redo and report.
    """
    if r.gray is None or r.error is not None:
        return
    try:
        if guarded(r, guard) or (classifier is not None and classifier.view == "lungs"):
            segment_slice(r)   # else later, if the findings or a heatmap ask for it
        if guarded(r, guard) and r.guard_input is None:
            r.guard_input = guard.prepare(guard_view(r), seg=r.seg)
        if classifier is not None and r.model_input is None:
            r.model_input = model_input(r, classifier)
    except Exception:
        r.guard_input = r.model_input = None


def model_input(r: SliceResult, classifier: SliceClassifier):
    """The classifier's input for this slice; a lung-view model crops by the slice's
    segmentation (made here if the slice has none yet)."""
    if classifier.view == "lungs":
        segment_slice(r)
        return classifier.prepare(r.gray, seg=r.seg)
    return classifier.prepare(r.gray)
