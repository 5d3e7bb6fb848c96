"""Study in the PACS -> case pipeline -> result stored back into the same study.

``run_on_study`` retrieves the CT series (one given, or all of them, then the
default as ``lungct.series.Study.default`` picks it), runs ``lungct.case`` on
it and stores an SR and/or an Encapsulated PDF (``lungct.pacs.results``) into
the study as new series. Nothing is stored unless at least one slice was
classified: a wrong study, a non-CT series, a study without images or an
unreadable series each end in a ``PacsError`` that says why.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from lungct.pacs.client import PacsClient, PacsError

STORE_KINDS = ("sr", "pdf")


@dataclass
class PacsRun:
    """What ``run_on_study`` did: the case, and the objects stored (kind -> SOPInstanceUID)."""

    case: object                     # lungct.case.Case
    study_uid: str
    series_uid: str
    stored: dict = field(default_factory=dict)
    stored_series: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"case": self.case.as_dict(), "stored": sorted(self.stored)}


def _as_slices(datasets: list) -> list:
    """Retrieved instances -> ``SliceFile``s through the one DICOM reading path (quiet, safe)."""
    import pydicom

    from lungct.series import SliceFile, read_slice

    out = []
    for i, ds in enumerate(datasets, start=1):
        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(buf, ds)
        except Exception as err:
            out.append(SliceFile(name=f"instance {i}", error="the PACS sent an instance that "
                                                              f"cannot be read ({type(err).__name__})"))
            continue
        out.append(read_slice(f"instance {i}", buf.getvalue()))
    return out


def choose_series(client: PacsClient, study_uid: str, series_uid: str | None) -> list[dict]:
    """The series to retrieve; PacsError for an unknown study, a non-CT series, no images."""
    listed = client.series(study_uid)
    if not listed:
        raise PacsError("the PACS has no series in this study (unknown StudyInstanceUID, or "
                        "a study without images): nothing stored")
    if series_uid:
        chosen = [s for s in listed if s["series_uid"] == series_uid]
        if not chosen:
            raise PacsError("this study has no series with that SeriesInstanceUID: "
                            "nothing stored")
        if chosen[0]["modality"] != "CT":
            raise PacsError(f"the series is {chosen[0]['modality'] or 'of unknown modality'}, "
                            "not CT: lungct classifies CT only; nothing stored")
        return chosen
    ct = [s for s in listed if s["modality"] == "CT"]
    if not ct:
        mods = ", ".join(sorted({str(s["modality"]) for s in listed}))
        raise PacsError(f"the study has no CT series (it holds {mods}): lungct classifies CT "
                        "only; nothing stored")
    return ct


def run_on_study(client: PacsClient, study_uid: str, classifier, guard=None,
                 series_uid: str | None = None, store: tuple[str, ...] = STORE_KINDS,
                 window: str = "lung", card: dict | None = None, cfg: dict | None = None,
                 batch_size: int = 32) -> PacsRun:
    """Retrieve, classify, and store the result back (``store``: any of "sr", "pdf")."""
    from lungct.case import classify_series
    from lungct.series import group_series

    unknown = set(store) - set(STORE_KINDS)
    if unknown:
        raise ValueError(f"unknown result kind(s) {sorted(unknown)}: use {STORE_KINDS}")
    files = []
    for s in choose_series(client, study_uid, series_uid):
        files += _as_slices(client.retrieve(study_uid, s["series_uid"]))
    study = group_series(files)
    series = study.default()
    if series is None:
        reasons = sorted({p.error for p in study.problems if p.error})
        raise PacsError("no readable image in the series"
                        + (f" ({'; '.join(reasons[:3])})" if reasons else "")
                        + ": nothing stored")
    sources = [f.dataset for f in series.files]   # the pipeline releases them once decoded
    case = classify_series(classifier, series, guard, window, batch_size, study=study)
    if case.verdict is None:
        c = case.counts
        raise PacsError(f"no slice could be classified ({c['refused']} refused, "
                        f"{c['outside_lungs']} outside the lungs, {c['error']} unreadable): "
                        "nothing stored")
    run = PacsRun(case, study_uid, series.key)
    card = card if card is not None else getattr(classifier, "card", None)
    from lungct.pacs.results import build_pdf, build_sr

    built = {}
    if "sr" in store:
        built["sr"] = build_sr(case.as_dict(), card, sources)
    if "pdf" in store:
        built["pdf"] = build_pdf(case.as_dict(), card, sources)
    client.store(list(built.values()), study_uid)
    run.stored = {k: str(ds.SOPInstanceUID) for k, ds in built.items()}
    run.stored_series = {k: str(ds.SeriesInstanceUID) for k, ds in built.items()}
    return run
