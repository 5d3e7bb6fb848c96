"""The lab: measuring and fitting what the product ships, apart from the product path.

Commands run under ``python -m lungct lab COMMAND``; nothing in the product
(``lungct.pipeline``, the app's clinical pages, the PACS) imports from here.

- ``findings``: fit the findings scorer on real tumour boxes and normal slices, and
  measure the findings layer (pointing game, FROC, false findings per slice, AUC)
  fitted on one Lung-PET-CT-Dx patient and reported on the other.
"""
