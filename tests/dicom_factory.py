"""Synthetic CT DICOM for the tests: the skeleton each test fills in, and whole series.

Both come from the package (``lungct.data.demo_series``), which builds the demo
study of ``make pacs`` the same way: one skeleton everywhere.
"""

from lungct.data.demo_series import ct_dataset  # noqa: F401
from lungct.data.demo_series import synthetic_series as ct_series  # noqa: F401
