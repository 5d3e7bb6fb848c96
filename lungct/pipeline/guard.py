"""Stage 2, guard: is this a lung CT slice? Refused and outside-the-lungs slices are marked.

DICOM files of a non-CT modality are refused by their tag, colour pictures by
the colour their bytes held; the pixels of the others are scored in one batch
(``SliceGuard.check_prepared``) from the inputs the segment stage made. If
the guard itself fails, nothing is classified: a tool that cannot tell a lung
CT from a photo must not guess.
"""

from __future__ import annotations

from lungct.pipeline.decode import guard_view
from lungct.pipeline.protocols import SliceGuard, Verdict
from lungct.pipeline.slices import SliceResult


def screen(guard: SliceGuard | None, results: list[SliceResult]) -> None:
    """The one call into the input guard: marks refused and outside-the-lungs slices."""
    from lungct.guard import modality_verdict

    if guard is None:   # no guard, no check (--no-guard): non-CT DICOM keeps its warning
        return
    todo = []
    for r in results:
        if r.gray is None or r.error is not None:
            continue
        verdict = modality_verdict(r.modality) if r.is_dicom else r.colour_picture
        if verdict is not None:
            apply_verdict(r, verdict)
        else:
            todo.append(r)
    if not todo:
        return
    try:
        prepared = [r.guard_input if r.guard_input is not None
                    else guard.prepare(guard_view(r), seg=r.seg) for r in todo]
        verdicts = guard.check_prepared(prepared)
    except Exception as err:
        for r in todo:
            r.error, r.rejected = (f"the input check (is this a lung CT slice?) failed "
                                   f"({type(err).__name__}): no classification shown"), True
        return
    for r, verdict in zip(todo, verdicts):
        apply_verdict(r, verdict)


def apply_verdict(r: SliceResult, verdict: Verdict) -> None:
    """Record the guard's verdict on the slice; a refusal replaces any warning with its reason."""
    r.guard = verdict.as_dict()
    if verdict.status == "accepted":
        return
    r.error, r.warning = verdict.reason, None
    if verdict.status == "outside_lungs":
        r.outside_lungs = True
    else:
        r.rejected = True
