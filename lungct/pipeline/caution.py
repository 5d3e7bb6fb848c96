"""Part of the classify stage: why a slice's answer must be read with caution.

A caution travels with the answer everywhere it is shown (terminal, JSON, app,
HTML/PDF report, DICOM SR); it flags the answer unsure. Two reasons: the
slice's rendering is unlike the training exports (the guard's rendering score),
or it is a lung-window rendering read by a model whose card shows it fails there.
"""

from __future__ import annotations

from dataclasses import dataclass

from lungct.pipeline.protocols import SliceClassifier
from lungct.pipeline.slices import SliceResult

CAUTION_RATE = 0.25
"""Share of normal test slices called malignant in the lung-window rendering (the model
card's ``rendering_robustness``) from which a lung-window slice's answer is flagged."""


def rendering_caution(classifier: SliceClassifier) -> str | None:
    """The warning every lung-window slice's answer carries when the model's own card shows
    it fails on that rendering (``python -m lungct lab robustness``), else None.

    Most hospitals export chest CT in a lung window; a model that learned a narrow-window
    export may call nearly every such slice malignant. Its answer is still shown, flagged
    unsure, with the measured rate, so the reader weighs it accordingly. One of the
    reasons of ``slice_caution``.
    """
    card = classifier.card or {}
    kinds = (card.get("rendering_robustness") or {}).get("kinds") or {}
    rate = (kinds.get("lung_window_imitation") or {}).get("normal_called_malignant")
    if rate is None or rate < CAUTION_RATE:
        return None
    return (f"lung-window image: this model learned narrow-window exports, and on its test "
            f"slices rendered in a lung window it called {rate:.0%} of normal slices "
            "malignant; review carefully")


CAUTION_PREFIX = "caution: "
"""Every slice caution starts so: the words a reader (and a test) looks for in any output."""


def worst_rendering_rate(classifier: SliceClassifier) -> tuple[str, float] | None:
    """(kind, rate): the rendering of the model card's ``rendering_robustness`` in which the
    model called the largest share of normal test slices malignant, or None."""
    card = classifier.card or {}
    kinds = (card.get("rendering_robustness") or {}).get("kinds") or {}
    rates = [(k, v["normal_called_malignant"]) for k, v in kinds.items()
             if isinstance(v, dict) and v.get("normal_called_malignant") is not None]
    return max(rates, key=lambda kv: kv[1]) if rates else None


@dataclass(frozen=True)
class Cautions:
    """What a model's card says about renderings, read once per batch (``cautions``)."""

    lung_window: str | None = None
    """``rendering_caution``'s text, or None."""
    worst_rate: tuple[str, float] | None = None
    """``worst_rendering_rate``."""


def cautions(classifier: SliceClassifier) -> Cautions:
    return Cautions(rendering_caution(classifier), worst_rendering_rate(classifier))


def slice_caution(r: SliceResult, model: Cautions) -> str | None:
    """Why this slice's answer must be read with caution, or None.

    Two reasons, either suffices:

    - its rendering and framing are unlike the training exports: the guard's rendering
      score (``lungct.guard.caution``: whole slice, fitted on IQ-OTH/NCCD train) is above
      its limit (99th percentile of IQ-OTH/NCCD's held-out val slices); the model card's
      worst measured rate on other renderings is quoted;
    - a lung-window rendering read by a model whose card shows it fails there
      (``model.lung_window``, from ``rendering_caution``).

    The score is of the rendering the guard judged (for DICOM the lung window, whatever
    window it is read in), so a DICOM and its lung-window PNG get the same reasons.
    """
    guard = r.guard or {}
    score, limit = guard.get("rendering_score"), guard.get("rendering_limit")
    reasons = []
    if score is not None and limit is not None and score > limit:
        reasons.append(f"this slice's rendering is unlike the training exports (score "
                       f"{score:.1f}, training source's 99th percentile {limit:.2f})")
    lung_window = bool(model.lung_window and r.lung_window)
    if not reasons and not lung_window:
        return None
    if lung_window:
        reasons.append(model.lung_window.removesuffix("; review carefully"))
    elif model.worst_rate:
        kind, rate = model.worst_rate
        reasons.append(f"on its test slices re-rendered as other sources do, this model "
                       f"called up to {rate:.0%} of normal slices malignant "
                       f"({kind.replace('_', ' ')})")
    return CAUTION_PREFIX + "; ".join(reasons) + "; review carefully"
