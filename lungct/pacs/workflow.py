"""Study in the PACS -> case pipeline -> result stored back into the same study.

``run_on_study`` retrieves the CT series (one given, or all of them, then the
default as ``lungct.pipeline.series.Study.default`` picks it), runs ``lungct.pipeline`` on
it and stores an SR and/or an Encapsulated PDF (``lungct.pacs.results``) into
the study as new series. Nothing is stored unless at least one slice was
classified: a wrong study, a non-CT series, a study without images or an
unreadable series each end in a ``PacsError`` that says why.

Reruns (``result_version``): each run's result is numbered, and a rerun labels
its own series as such: SeriesDescription "lungct case report (SR, run 2,
supersedes run 1)", SeriesNumber 9911/9912 for run 2 (9901/9902 for run 1).
Why versioning by default and deletion only on request: DICOMweb has no
deletion that servers agree on, a clinical PACS usually forbids it, and an
earlier report may already have been read; a versioned series works on every
server and destroys nothing, and a reader sees at once which result is the
latest. Where the server is an Orthanc and the user asks for it (``replace``:
the app's confirmation box, ``pacs run --replace``), the earlier result series
of the kinds just stored are deleted through Orthanc's REST API, after the new
ones were stored (a failed store never leaves the study without a result).
Only series lungct wrote are ever touched: Manufacturer is lungct's and the
description starts with the report title.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from lungct.pacs.client import PacsClient, PacsError

STORE_KINDS = ("sr", "pdf")


@dataclass
class PacsRun:
    """What ``run_on_study`` did: the case, and the objects stored (kind -> SOPInstanceUID)."""

    case: object                     # lungct.pipeline.Case
    study_uid: str
    series_uid: str
    stored: dict = field(default_factory=dict)
    stored_series: dict = field(default_factory=dict)
    version: int = 1                 # this run's result number in the study
    replaced: list = field(default_factory=list)   # earlier result series deleted (UIDs)

    def as_dict(self) -> dict:
        return {"case": self.case.as_dict(), "stored": sorted(self.stored),
                "version": self.version, "replaced": len(self.replaced)}


def _kind(series: dict) -> str | None:
    return {"SR": "sr", "DOC": "pdf"}.get(series.get("modality"))


def earlier_results(client: PacsClient, study_uid: str, listed: list | None = None) -> list[dict]:
    """The result series lungct stored in this study before, each with its ``version`` and ``kind``.

    ``listed``: the study's series as ``client.series`` gave them (saves a search).
    """
    from lungct.pipeline.report import TITLE
    from lungct.pacs.results import MANUFACTURER

    out = []
    for s in client.series(study_uid) if listed is None else listed:
        if (s["manufacturer"] == MANUFACTURER and _kind(s)
                and str(s["description"]).startswith(TITLE)):
            found = re.search(r"\brun (\d+)", str(s["description"]))
            out.append({**s, "kind": _kind(s), "version": int(found.group(1)) if found else 1})
    return out


def result_version(ds, kind: str, version: int) -> None:
    """Label a built SR/PDF as run ``version`` of the study's result (run 1: as built)."""
    from lungct.pipeline.report import TITLE
    from lungct.pacs.results import PDF_SERIES_NUMBER, SR_SERIES_NUMBER

    if version <= 1:
        return
    ds.SeriesDescription = (f"{TITLE} ({kind.upper()}, run {version}, supersedes run "
                            f"{version - 1})")[:64]
    ds.SeriesNumber = {"sr": SR_SERIES_NUMBER, "pdf": PDF_SERIES_NUMBER}[kind] + 10 * (version - 1)


def _as_slices(datasets: list) -> list:
    """Retrieved instances -> ``SliceFile``s through the one DICOM reading path (quiet, safe)."""
    import pydicom

    from lungct.pipeline.series import SliceFile, read_slice

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
                 batch_size: int = 32, replace: bool = False) -> PacsRun:
    """Retrieve, classify, and store the result back (``store``: any of "sr", "pdf").

    A rerun's result is versioned (run 2, supersedes run 1); with ``replace``
    (Orthanc only, checked before anything is done) the earlier result series
    of the stored kinds are deleted once the new ones are in.
    """
    from lungct.config import load_config
    from lungct.pipeline import classify_series
    from lungct.pipeline.findings import findings_setting
    from lungct.pipeline.series import group_series

    unknown = set(store) - set(STORE_KINDS)
    if unknown:
        raise ValueError(f"unknown result kind(s) {sorted(unknown)}: use {STORE_KINDS}")
    if replace and store and client.orthanc_root() is None:
        raise PacsError(f"{client.url} is not an Orthanc, so earlier results cannot be "
                        "replaced: run without replacing (the new result is stored as a new "
                        "run); nothing stored")
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
    case = classify_series(classifier, series, guard, window, batch_size, study=study,
                           findings=findings_setting(cfg or load_config()))
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
    if not built:
        return run
    earlier = earlier_results(client, study_uid)
    run.version = max([e["version"] for e in earlier], default=0) + 1
    for kind, ds in built.items():
        result_version(ds, kind, run.version)
    client.store(list(built.values()), study_uid)
    run.stored = {k: str(ds.SOPInstanceUID) for k, ds in built.items()}
    run.stored_series = {k: str(ds.SeriesInstanceUID) for k, ds in built.items()}
    if replace:
        for old in earlier:
            if old["kind"] in built:
                client.delete_series(old["series_uid"])
                run.replaced.append(old["series_uid"])
    return run
