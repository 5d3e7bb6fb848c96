"""The product path, one slice object (``SliceResult``) carried through named stages.

    files -> series (read once) -> decode -> segment -> guard -> classify (+ caution)
          -> findings -> verdict -> report;  explain (heatmaps) on demand

Read in that order: ``series`` (files, folders, zips, DICOM series), ``decode``,
``segment`` (one segmentation per slice, carried on it), ``guard``, ``classify``
and ``caution``, ``findings``, ``verdict`` (the one case rule), ``case`` (the
stages run in batches: ``run_case``, ``iter_results``), ``explain``, ``report``
(text, HTML, PDF), ``batch`` (folder runs in worker processes), ``options``
(model and guard from command-line flags). What a classifier and a guard must
offer is in ``protocols``. Every page of the app, ``predict``, ``case``, the
benchmarks and the PACS run these stages.
"""

from lungct.pipeline.case import (Case, analyse_slices, classify_series, iter_results, model_info,
                                  model_version, prefetch, run_case, weights_digest)
from lungct.pipeline.caution import CAUTION_PREFIX, CAUTION_RATE, Cautions, cautions, slice_caution
from lungct.pipeline.classify import analyse_one, classify, reclassify
from lungct.pipeline.decode import GUARD_WINDOW, decode, guard_view
from lungct.pipeline.explain import heatmap
from lungct.pipeline.findings import findings_scorer
from lungct.pipeline.guard import screen
from lungct.pipeline.protocols import ClassifierBase, SliceClassifier, SliceGuard, Verdict
from lungct.pipeline.segment import segment_slice
from lungct.pipeline.slices import (ACCEPTED_EXTENSIONS, ACCEPTED_HELP, STATUSES, SliceResult,
                                    failure_text)
from lungct.pipeline.verdict import (CASE_RULE, REFUSED_RULE, case_label, case_verdict, counts,
                                     most_suspicious_first, suspicion)

__all__ = ["ACCEPTED_EXTENSIONS", "ACCEPTED_HELP", "CASE_RULE", "CAUTION_PREFIX", "CAUTION_RATE",
           "Case", "Cautions", "ClassifierBase", "GUARD_WINDOW", "REFUSED_RULE", "STATUSES",
           "SliceClassifier", "SliceGuard", "SliceResult", "Verdict", "analyse_one",
           "analyse_slices", "case_label", "case_verdict", "cautions", "classify",
           "classify_series", "counts", "decode", "failure_text", "findings_scorer",
           "guard_view", "heatmap", "iter_results", "model_info", "model_version",
           "most_suspicious_first", "prefetch", "reclassify", "run_case", "screen", "segment_slice",
           "slice_caution", "suspicion", "weights_digest"]
