"""The options of the commands that classify (predict, case, pacs run), and what they load.

``add_model_options`` puts model, guard, window, backend and threads on a
parser; ``load_model_and_guard`` turns them into a classifier and an input
guard. Below the command line on purpose: ``lungct.pacs.cli`` registers its
own command and shares these.
"""

from __future__ import annotations


def add_model_options(p) -> None:
    """The options ``predict``, ``case`` and ``pacs`` share: model, guard, window, backend."""
    p.add_argument("--model", help="model name under models/ or a folder (default: app's)")
    p.add_argument("--no-guard", action="store_true",
                   help="skip the input guard (is this a lung CT slice?): not recommended")
    p.add_argument("--window", choices=["lung", "mediastinal", "file"],
                   help="DICOM window (default: preprocess.dicom_window)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"],
                   help="inference backend (default: LUNGCT_BACKEND or runtime.backend)")
    p.add_argument("--threads", type=int,
                   help="ONNX Runtime threads (default: runtime.threads; 0 = one per core)")
    p.add_argument("--no-findings", action="store_true",
                   help="skip the findings stage (candidate lesions with outline and size)")


def findings_option(args, cfg: dict):
    """What the findings stage runs with: "shipped" (the scorer in models/findings), or None
    when ``--no-findings`` or params.yaml ``findings.enabled: false`` switch it off."""
    from lungct.pipeline.findings import findings_setting
    return None if args.no_findings else findings_setting(cfg)


def load_model_and_guard(args, cfg: dict) -> tuple:
    """(classifier, guard or None) as ``args`` say.

    Raises a ``LungctError`` (``ModelLoadError``, ``OnnxUnavailable``,
    ``GuardLoadError``) that the command line prints as one ``error:`` line.
    """
    from lungct import guard
    from lungct.guard import GuardLoadError
    from lungct.inference import Classifier

    name = args.model or cfg["app"]["default_model"]
    clf = Classifier.from_name(name, cfg["app"]["unsure_below"], backend=args.backend,
                               threads=args.threads, cfg=cfg)
    if not cfg.get("ood", {}).get("enabled", True) or args.no_guard:
        return clf, None
    try:
        return clf, guard.load_guard(cfg=cfg)
    except GuardLoadError as err:
        raise GuardLoadError(f"the input guard could not be loaded ({err}); "
                             "use --no-guard to classify without it") from err
