"""The case result as DICOM objects in the source study: a Comprehensive SR and an Encapsulated PDF.

Both are built with highdicom (the SR with ``highdicom.sr.ComprehensiveSR``,
the PDF on ``highdicom.base.SOPClass``) from ``lungct.pipeline.report``'s sections,
so they say the same as the PDF report: verdict and rule, counts, findings by
slice position, series facts, model name, version and card summary, and the
intended-use statement. The SR also carries each finding as a TID 1500 measurement
group (its outline on the slice and its longest diameter). Each goes into the study
as a new series.

What they carry about the patient: their DICOM header repeats the source
study's patient and study module (PatientID, name...), because that is how a
PACS files an object under its study; the content itself (SR text, PDF pages)
names no patient, no file and no date of birth, only slice positions.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from contextlib import contextmanager

import numpy as np

from lungct import __version__
from lungct.pipeline.report import (CAUTION_HEADING, FINDINGS_HEADING, TITLE, case_pdf,
                                report_sections)

MANUFACTURER = "lungct (research software, not a medical device)"
SR_SERIES_NUMBER, PDF_SERIES_NUMBER = 9901, 9902
# Codes: LOINC 18748-4 "Diagnostic imaging report"; DCM 121071 "Finding",
# 121073 "Impression", 121106 "Comment", 111001 "Algorithm Name", 111003 "Algorithm Version".
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName")


@contextmanager
def _quiet():
    """highdicom warns (and may log) quoting values such as the patient's name: not here."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _evidence(sources: list) -> list:
    """The sources with the study's type-2 patient/study attributes present (empty if absent)."""
    for ds in sources:
        for keyword in _PATIENT_STUDY:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return sources


def _code(value: str, scheme: str, meaning: str):
    from highdicom.sr import CodedConcept
    return CodedConcept(value, scheme, meaning)


def _heading_code(heading: str):
    return {"Case verdict": _code("121073", "DCM", "Impression"),
            "Intended use": _code("121106", "DCM", "Comment"),
            CAUTION_HEADING: _code("121106", "DCM", "Comment"),
            "Model": _code("111001", "DCM", "Algorithm Name")}.get(
        heading, _code("121071", "DCM", "Finding"))


def _measurements(case: dict, sources: list) -> list:
    """The findings as TID 1500 "Imaging Measurements": one TID 1410 planar ROI measurement
    group per finding with a size (highdicom), its outline as a closed POLYLINE on the
    classified instance (``sources`` are in the case's slice order), a tracking
    identifier, and its longest diameter (SNOMED "Diameter", UCUM mm). A viewer can draw
    and list them; the report's words stay beside them."""
    from highdicom.sr import (ContainerContentItem, ContentSequence, ImageRegion, Measurement,
                              PlanarROIMeasurementsAndQualitativeEvaluations,
                              SourceImageForRegion, TrackingIdentifier)
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    groups = []
    for s in case["slices"]:
        index = s["index"]
        if not s.get("findings") or not 1 <= index <= len(sources):
            continue
        image = sources[index - 1]
        for rank, f in enumerate(s["findings"], start=1):
            if f.get("diameter_mm") is None or len(f.get("outline") or []) < 3:
                continue
            points = np.asarray(f["outline"] + [f["outline"][0]], dtype=np.float32)
            region = ImageRegion(graphic_type="POLYLINE", graphic_data=points,
                                 source_image=SourceImageForRegion(image.SOPClassUID,
                                                                   image.SOPInstanceUID))
            diameter = Measurement(name=_code("81827009", "SCT", "Diameter"),
                                   value=float(f["diameter_mm"]),
                                   unit=Code("mm", "UCUM", "millimeter"))
            groups.extend(PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(
                    uid=generate_uid(), identifier=f"finding {rank} on slice {index}"),
                referenced_region=region, measurements=[diameter],
                finding_type=_code("108369006", "SCT", "Neoplasm")))
    if not groups:
        return []
    container = ContainerContentItem(name=_code("126010", "DCM", "Imaging Measurements"),
                                     relationship_type="CONTAINS")
    container.ContentSequence = ContentSequence(groups)
    return [container]


def build_sr(case: dict, card: dict | None, sources: list, generated: dt.datetime | None = None):
    """A Comprehensive SR of the case, in the study of ``sources`` (the classified instances)."""
    from highdicom.sr import (ComprehensiveSR, ContainerContentItem, ContentSequence,
                              TextContentItem)
    from pydicom.uid import generate_uid

    root = ContainerContentItem(name=_code("18748-4", "LN", "Diagnostic imaging report"))
    items = []
    for heading, lines in report_sections(case, card, generated):
        code = _heading_code(heading)
        for line in lines:
            text = line if heading in ("Intended use", "Findings by slice position",
                                       FINDINGS_HEADING) \
                else f"{heading}: {line}"
            items.append(TextContentItem(name=code, value=text[:1024],
                                         relationship_type="CONTAINS"))
    items += _measurements(case, sources)
    items.append(TextContentItem(name=_code("111003", "DCM", "Algorithm Version"),
                                 value=case["model"]["version"][:1024],
                                 relationship_type="CONTAINS"))
    root.ContentSequence = ContentSequence(items)
    with _quiet():
        return ComprehensiveSR(evidence=_evidence(sources), content=root,
                               series_instance_uid=generate_uid(),
                               series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(),
                               instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
                               series_description=f"{TITLE} (SR)"[:64])


def build_pdf(case: dict, card: dict | None, sources: list, generated: dt.datetime | None = None):
    """An Encapsulated PDF of the case report, in the study of ``sources``."""
    from highdicom.base import SOPClass
    from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

    generated = generated or dt.datetime.now(dt.timezone.utc)
    ref = sources[0]
    with _quiet():
        ds = SOPClass(study_instance_uid=ref.StudyInstanceUID,
                      series_instance_uid=generate_uid(), series_number=PDF_SERIES_NUMBER,
                      sop_instance_uid=generate_uid(), sop_class_uid=EncapsulatedPDFStorage,
                      instance_number=1, modality="DOC", manufacturer=MANUFACTURER,
                      transfer_syntax_uid=ExplicitVRLittleEndian,
                      patient_id=ref.get("PatientID"), patient_name=ref.get("PatientName"),
                      patient_birth_date=ref.get("PatientBirthDate"),
                      patient_sex=ref.get("PatientSex") or None,
                      accession_number=ref.get("AccessionNumber"), study_id=ref.get("StudyID"),
                      study_date=ref.get("StudyDate"), study_time=ref.get("StudyTime"),
                      referring_physician_name=ref.get("ReferringPhysicianName"),
                      series_description=f"{TITLE} (PDF)"[:64], software_versions=__version__,
                      content_date=generated.date(), content_time=generated.time())
    pdf = case_pdf(case, card, generated)
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = TITLE
    ds.BurnedInAnnotation = "NO"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    ds.AcquisitionDateTime = generated.strftime("%Y%m%d%H%M%S")
    return ds


def sr_text(sr) -> list[str]:
    """The text items of an SR built here (to read a stored result back)."""
    return [str(item.TextValue) for item in sr.ContentSequence if "TextValue" in item]
