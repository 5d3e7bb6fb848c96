"""A DICOMweb client (dicomweb-client) whose failures are one error with a clear message.

Search results are reduced to what may be shown: UIDs, study date and
description, modalities, counts and series descriptions; never a patient's
name, ID, birth date or accession number, although they can be used as search
filters.

Timeouts: a short connect timeout (``pacs.connect_timeout_s``, 3 s) so a server
that is down or unreachable is reported at once, and a longer read timeout
(``pacs.timeout_s``, 120 s: the gap allowed between two received chunks, not a
cap on a whole transfer) so a big series still downloads. dicomweb-client's own
retries are off: they retried every failed connection four times with
exponential waits (2 + 4 + 8 + 16 s), which made a down server a 30-second
silent wait before any error.
"""

from __future__ import annotations

import os

from lungct.errors import LungctError

ENV_URL, ENV_USER, ENV_PASSWORD = "LUNGCT_PACS_URL", "LUNGCT_PACS_USER", "LUNGCT_PACS_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:8042/dicom-web"
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 3.0, 120.0
# DICOM tags (hex) read from QIDO-RS answers
_STUDY_UID, _SERIES_UID, _MODALITY = "0020000D", "0020000E", "00080060"
_MODALITIES_IN_STUDY, _N_SERIES, _N_STUDY_INSTANCES = "00080061", "00201206", "00201208"
_N_SERIES_INSTANCES, _SERIES_DESCRIPTION, _SERIES_NUMBER = "00201209", "0008103E", "00200011"
_STUDY_DATE, _STUDY_DESCRIPTION, _MANUFACTURER = "00080020", "00081030", "00080070"
_WHERE = "check that the server is running and the URL (pacs.url, LUNGCT_PACS_URL, --url)"


class PacsError(LungctError, RuntimeError):
    """Anything that went wrong talking to the PACS; the message says what and what to do."""


def pacs_settings(cfg: dict | None = None, url: str | None = None) -> dict:
    """URL (argument > ``LUNGCT_PACS_URL`` > ``pacs.url``), timeouts; basic auth from the env."""
    if cfg is None:
        from lungct.config import load_config
        cfg = load_config()
    section = cfg.get("pacs") or {}
    return {"url": (url or os.environ.get(ENV_URL) or section.get("url") or DEFAULT_URL).rstrip("/"),
            "user": os.environ.get(ENV_USER) or None,
            "password": os.environ.get(ENV_PASSWORD) or None,
            "timeout_s": float(section.get("timeout_s", READ_TIMEOUT_S)),
            "connect_timeout_s": float(section.get("connect_timeout_s", CONNECT_TIMEOUT_S))}


def _value(item: dict, tag: str):
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if len(values) == 1 else (values or None)


def _date(value) -> str:
    """DICOM DA (YYYYMMDD) -> YYYY-MM-DD; anything else as given, empty when absent."""
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


class PacsClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb server.

    >>> pacs = PacsClient("http://127.0.0.1:8042/dicom-web")   # doctest: +SKIP
    >>> pacs.studies()                                          # doctest: +SKIP
    """

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 timeout_s: float = READ_TIMEOUT_S, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        import requests
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            raise PacsError(f"the PACS URL must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        self._session = requests.Session()
        if user:
            self._session.auth = (user, password or "")
        self._timeout = (connect_timeout_s, timeout_s)
        self._client = DICOMwebClient(self.url, session=self._session, timeout=self._timeout)
        self._client.set_http_retry_params(retry=False)

    @classmethod
    def from_config(cls, cfg: dict | None = None, url: str | None = None) -> "PacsClient":
        s = pacs_settings(cfg, url)
        return cls(s["url"], s["user"], s["password"], s["timeout_s"], s["connect_timeout_s"])

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        connect, read = self._timeout
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.ConnectTimeout:   # before ConnectionError: it is both
            raise PacsError(f"no answer from the PACS at {self.url} within {connect:g} s "
                            f"({what}): {_WHERE}, and the network or firewall") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"cannot reach the PACS at {self.url} ({what}): connection refused "
                            f"or host unknown; {_WHERE}") from None
        except requests.exceptions.Timeout:
            raise PacsError(f"the PACS at {self.url} stopped answering for {read:g} s "
                            f"({what}): the server may be overloaded; try again, or raise "
                            "pacs.timeout_s") from None
        except requests.exceptions.HTTPError as err:
            code = getattr(err.response, "status_code", "?")
            down = f"the server, or a proxy in front of it, is unavailable: {_WHERE}"
            hint = {401: "the server needs credentials (LUNGCT_PACS_USER, LUNGCT_PACS_PASSWORD)",
                    403: "the credentials are not allowed to do this",
                    404: "no DICOMweb service or object at this address: check the URL "
                         "(for Orthanc it ends in /dicom-web)",
                    502: down, 503: down, 504: down}.get(code, "see the server log")
            raise PacsError(f"the PACS at {self.url} refused {what} (HTTP {code}): "
                            f"{hint}") from None
        except ValueError as err:   # a non-DICOMweb answer (an HTML page, bad JSON)
            raise PacsError(f"{self.url} did not answer as a DICOMweb server ({what}: "
                            f"{type(err).__name__}); check the URL") from None

    # ------------------------------------------------------------- search
    def studies(self, filters: dict | None = None, limit: int = 100) -> list[dict]:
        """Studies matching ``filters`` (e.g. {"AccessionNumber": ...}).

        Each: ``study_uid``, ``date`` (YYYY-MM-DD or ""), ``description``,
        ``modalities``, ``series``, ``instances``; no patient attribute.
        """
        found = self._call("the study search", self._client.search_for_studies,
                           search_filters=filters or {}, limit=limit,
                           fields=["StudyDate", "StudyDescription", "ModalitiesInStudy",
                                   "NumberOfStudyRelatedSeries",
                                   "NumberOfStudyRelatedInstances"])
        out = []
        for item in found:
            mods = _value(item, _MODALITIES_IN_STUDY)
            out.append({"study_uid": _value(item, _STUDY_UID),
                        "date": _date(_value(item, _STUDY_DATE)),
                        "description": str(_value(item, _STUDY_DESCRIPTION) or ""),
                        "modalities": mods if isinstance(mods, list) else [m for m in [mods] if m],
                        "series": _value(item, _N_SERIES),
                        "instances": _value(item, _N_STUDY_INSTANCES)})
        return out

    def series(self, study_uid: str) -> list[dict]:
        """The series of a study: UID, modality, number, description, manufacturer, count."""
        found = self._call("the series search", self._client.search_for_series,
                           study_instance_uid=study_uid,
                           fields=["SeriesDescription", "NumberOfSeriesRelatedInstances",
                                   "SeriesNumber", "Manufacturer"])
        return [{"series_uid": _value(i, _SERIES_UID), "modality": _value(i, _MODALITY),
                 "number": _value(i, _SERIES_NUMBER),
                 "description": _value(i, _SERIES_DESCRIPTION) or "",
                 "manufacturer": str(_value(i, _MANUFACTURER) or ""),
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

    # ------------------------------------------------------------- delete
    def orthanc_root(self) -> str | None:
        """Orthanc's REST root when this URL is an Orthanc's ``.../dicom-web``, else None.

        DICOMweb has no deletion that servers agree on; Orthanc's own REST API
        (``DELETE /series/{id}``) has one, so only there can a rerun replace
        its earlier result.
        """
        import requests

        root, _, last = self.url.rpartition("/")
        if last != "dicom-web" or not root:
            return None
        try:
            answer = self._session.get(root + "/system", timeout=self._timeout)
            return root if answer.ok and "ApiVersion" in answer.json() else None
        except (requests.exceptions.RequestException, ValueError):
            return None

    def delete_series(self, series_uid: str) -> None:
        """Delete one series (Orthanc only; PacsError elsewhere or when it fails)."""
        root = self.orthanc_root()
        if root is None:
            raise PacsError(f"{self.url} is not an Orthanc: lungct can delete an earlier "
                            "result only through Orthanc's REST API")

        def delete():
            found = self._session.post(root + "/tools/lookup", data=series_uid,
                                       timeout=self._timeout)
            found.raise_for_status()
            for hit in found.json():
                if hit.get("Type") == "Series":
                    self._session.delete(f"{root}/series/{hit['ID']}",
                                         timeout=self._timeout).raise_for_status()

        self._call("deleting an earlier result series", delete)
