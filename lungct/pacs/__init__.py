"""PACS integration over DICOMweb: search, retrieve, classify a series, store the result back.

- ``client``: ``PacsClient`` (dicomweb-client: QIDO-RS search, WADO-RS retrieve,
  STOW-RS store) with one error type, ``PacsError``, whose message says what to do;
- ``results``: the case result as DICOM objects built with highdicom (a
  Comprehensive SR and an Encapsulated PDF) in the source study, as a new series;
- ``workflow``: ``run_on_study`` (retrieve -> ``lungct.pipeline`` -> store back);
- ``server``: a local Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``)
  for ``make pacs`` and the tests;
- ``cli``: ``python -m lungct pacs ...``.

The server URL comes from ``pacs.url`` in params.yaml or ``LUNGCT_PACS_URL``;
basic auth, when the server needs it, only from ``LUNGCT_PACS_USER`` and
``LUNGCT_PACS_PASSWORD``: no credential is ever stored in the repository.
"""
