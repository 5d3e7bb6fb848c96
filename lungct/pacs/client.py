"""A DICOMweb client (dicomweb-client) whose failures are one error with a clear message.

Search results are reduced to what may be shown: UIDs, modalities, counts and
series descriptions; never a patient's name, ID, birth date or accession
number, although they can be used as search filters.
"""

from __future__ import annotations

import os

from lungct.errors import LungctError

ENV_URL, ENV_USER, ENV_PASSWORD = "LUNGCT_PACS_URL", "LUNGCT_PACS_USER", "LUNGCT_PACS_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:8042/dicom-web"
# DICOM tags (hex) read from QIDO-RS answers
_STUDY_UID, _SERIES_UID, _MODALITY = "0020000D", "0020000E", "00080060"
_MODALITIES_IN_STUDY, _N_SERIES, _N_STUDY_INSTANCES = "00080061", "00201206", "00201208"
_N_SERIES_INSTANCES, _SERIES_DESCRIPTION, _SERIES_NUMBER = "00201209", "0008103E", "00200011"


class PacsError(LungctError, RuntimeError):
    """Anything that went wrong talking to the PACS; the message says what and what to do."""


def pacs_settings(cfg: dict | None = None, url: str | None = None) -> dict:
    """URL (argument > ``LUNGCT_PACS_URL`` > ``pacs.url``) and basic auth from the environment."""
    if cfg is None:
        from lungct.config import load_config
        cfg = load_config()
    section = cfg.get("pacs") or {}
    return {"url": (url or os.environ.get(ENV_URL) or section.get("url") or DEFAULT_URL).rstrip("/"),
            "user": os.environ.get(ENV_USER) or None,
            "password": os.environ.get(ENV_PASSWORD) or None,
            "timeout_s": float(section.get("timeout_s", 30))}


def _value(item: dict, tag: str):
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if len(values) == 1 else (values or None)


class PacsClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb server.

    >>> pacs = PacsClient("http://127.0.0.1:8042/dicom-web")   # doctest: +SKIP
    >>> pacs.studies()                                          # doctest: +SKIP
    """

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 timeout_s: float = 30.0):
        import requests
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            raise PacsError(f"the PACS URL must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        session = requests.Session()
        if user:
            session.auth = (user, password or "")
        self._timeout = timeout_s
        session.request = _with_timeout(session.request, timeout_s)
        self._client = DICOMwebClient(self.url, session=session)

    @classmethod
    def from_config(cls, cfg: dict | None = None, url: str | None = None) -> "PacsClient":
        s = pacs_settings(cfg, url)
        return cls(s["url"], s["user"], s["password"], s["timeout_s"])

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.ConnectionError:
            raise PacsError(f"cannot reach the PACS at {self.url} ({what}): is the server "
                            "running and the URL right (pacs.url, LUNGCT_PACS_URL)?") from None
        except requests.exceptions.Timeout:
            raise PacsError(f"the PACS at {self.url} did not answer within "
                            f"{self._timeout:.0f} s ({what})") from None
        except requests.exceptions.HTTPError as err:
            code = getattr(err.response, "status_code", "?")
            hint = {401: "the server needs credentials (LUNGCT_PACS_USER, LUNGCT_PACS_PASSWORD)",
                    403: "the credentials are not allowed to do this",
                    404: "no DICOMweb service or object at this address: check the URL "
                         "(for Orthanc it ends in /dicom-web)"}.get(code, "see the server log")
            raise PacsError(f"the PACS refused {what} (HTTP {code}): {hint}") from None
        except ValueError as err:   # a non-DICOMweb answer (an HTML page, bad JSON)
            raise PacsError(f"{self.url} did not answer as a DICOMweb server ({what}: "
                            f"{type(err).__name__}); check the URL") from None

    # ------------------------------------------------------------- search
    def studies(self, filters: dict | None = None, limit: int = 100) -> list[dict]:
        """Studies matching ``filters`` (e.g. {"AccessionNumber": ...}): UIDs and counts only."""
        found = self._call("the study search", self._client.search_for_studies,
                           search_filters=filters or {}, limit=limit,
                           fields=["ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                   "NumberOfStudyRelatedInstances"])
        out = []
        for item in found:
            mods = _value(item, _MODALITIES_IN_STUDY)
            out.append({"study_uid": _value(item, _STUDY_UID),
                        "modalities": mods if isinstance(mods, list) else [m for m in [mods] if m],
                        "series": _value(item, _N_SERIES),
                        "instances": _value(item, _N_STUDY_INSTANCES)})
        return out

    def series(self, study_uid: str) -> list[dict]:
        """The series of a study: UID, modality, number, description, instance count."""
        found = self._call("the series search", self._client.search_for_series,
                           study_instance_uid=study_uid,
                           fields=["SeriesDescription", "NumberOfSeriesRelatedInstances",
                                   "SeriesNumber"])
        return [{"series_uid": _value(i, _SERIES_UID), "modality": _value(i, _MODALITY),
                 "number": _value(i, _SERIES_NUMBER),
                 "description": _value(i, _SERIES_DESCRIPTION) or "",
                 "instances": _value(i, _N_SERIES_INSTANCES)} for i in found]

    # ----------------------------------------------------------- retrieve
    def retrieve(self, study_uid: str, series_uid: str) -> list:
        """Every instance of a series as pydicom Datasets (WADO-RS)."""
        return self._call("the series download", self._client.retrieve_series,
                          study_instance_uid=study_uid, series_instance_uid=series_uid)

    # -------------------------------------------------------------- store
    def store(self, datasets: list, study_uid: str | None = None) -> None:
        """STOW-RS; raises PacsError when any instance was not stored."""
        if not datasets:
            return
        answer = self._call("storing the result", self._client.store_instances,
                            datasets=list(datasets), study_instance_uid=study_uid)
        failed = getattr(answer, "FailedSOPSequence", None)
        if failed:
            raise PacsError(f"the PACS refused {len(failed)} of {len(datasets)} instances")


def _with_timeout(request, timeout_s: float):
    def call(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout_s)
        return request(method, url, **kwargs)
    return call
