"""Single-image input for the Grad-CAM and comparison pages: the Classify page's pipeline on
one file (``one_result``), or the page stops with the pipeline's reason."""

from __future__ import annotations

import streamlit as st

from lungct.app_support import cache, catalog
from lungct.app_support.case import check_extension
from lungct.preprocess import InvalidImageError


def upload_name(upload) -> str:
    """"upload" plus the file's accepted extension: the name itself may identify a patient.

    An unsupported type is shown as an error and stops the page.
    """
    try:
        return "upload" + check_extension(upload.name)
    except InvalidImageError as err:
        st.error(str(err))
        st.stop()


def one_result(classifier, model_key: str, data: bytes, name: str, window: str,
               max_pixels: int | None = None):
    """One file through the case pipeline, as the Classify page runs it (the guard in its own
    window, the caution, the findings): the ``SliceResult``; a file that is unreadable,
    refused or outside the lungs stops the page with the pipeline's reason."""
    guard = cache.guard(catalog.guard_key(), str(catalog.guard_folder()))
    r = cache.analyse(classifier, model_key, ((name, data),), window, max_pixels or 0, False,
                      guard, catalog.guard_key())[0]
    if r.status == "error":
        st.error(f"This file could not be read: {r.error}")
        st.stop()
    if not r.ok:
        st.warning(r.error)
        st.stop()
    return r
