"""Stage 6, explain (on demand: it is slow): a heatmap of one classified slice.

Uses the slice's own segmentation (``SliceResult.seg``) for a lung-view
model's crop and for laying the heatmap back on the slice.
"""

from __future__ import annotations

from lungct.pipeline.segment import segment_slice
from lungct.pipeline.slices import SliceResult
from lungct.preprocess import InvalidImageError


def heatmap(classifier, result: SliceResult, method: str = "Grad-CAM",
            target: str | None = None, layer: str | None = None):
    """The ``lungct.explain.Explanation`` of one classified slice."""
    from lungct.explain import explain

    if result.gray is None:
        raise InvalidImageError(f"{result.where} has no pixels to explain")
    segment_slice(result)
    label = target or (result.prediction.label if result.ok else None)
    return explain(classifier.torch_model, result.gray, method=method, target_class=label,
                   layer=layer, seg=result.seg)
