"""``python -m lungct pacs {studies,series,run}``: search a PACS, classify a series, store the result.

    python -m lungct pacs studies [--accession A] [--patient-id P]
    python -m lungct pacs series STUDY_UID
    python -m lungct pacs run STUDY_UID [--series SERIES_UID] [--store sr pdf | --no-store]
                                        [--replace]

Output names studies by UID, date, description, modalities and counts, series
by UID, modality, number and description; patient identifiers may be given as
search filters but are never printed. A rerun's result is stored as the next
run (see ``lungct.pacs.workflow``); ``--replace`` deletes the earlier one (Orthanc).
"""

from __future__ import annotations

import argparse
import json
import sys


def _client(args, cfg):
    from lungct.pacs.client import PacsClient
    return PacsClient.from_config(cfg, args.url)


def cmd_pacs(args) -> int:
    from lungct.config import config_from_args
    from lungct.pacs.client import PacsError

    cfg = config_from_args(args)
    if args.pacs_command == "serve":
        from lungct.pacs.server import serve
        return serve(args.port, args.folder, demo=not args.no_demo)
    try:
        client = _client(args, cfg)
        if args.pacs_command == "studies":
            filters = {k: v for k, v in (("AccessionNumber", args.accession),
                                         ("PatientID", args.patient_id)) if v}
            found = client.studies(filters)
            if args.json:
                print(json.dumps(found))
            for s in [] if args.json else found:
                print(f"{s['study_uid']}  {s['date'] or '-'}  {s['description'] or '-'}  "
                      f"{'/'.join(s['modalities']) or '-'}  {s['series']} series, "
                      f"{s['instances']} instances")
            if not found and not args.json:
                print("no study found", file=sys.stderr)
            return 0
        if args.pacs_command == "series":
            found = client.series(args.study)
            if args.json:
                print(json.dumps(found))
            for s in [] if args.json else found:
                print(f"{s['series_uid']}  {s['modality']}  #{s['number']}  "
                      f"{s['instances']} instances  {s['description']}")
            return 0
        return _run(args, cfg, client)
    except PacsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(args, cfg, client) -> int:
    from lungct.pipeline.report import format_case
    from lungct.pipeline.options import load_model_and_guard
    from lungct.training.first_use import ensure_exports, ensure_model_export
    from lungct.pacs.client import PacsError
    from lungct.pacs.workflow import run_on_study

    # first use after a plain pip install: the ONNX builds that make onnx makes ahead
    ensure_model_export(args.model or cfg["app"]["default_model"], cfg, args.backend)
    clf, guard = load_model_and_guard(args, cfg)
    ensure_exports(guard)   # the guard's ONNX build on first use (what make onnx does)
    store = () if args.no_store else tuple(args.store)
    try:
        run = run_on_study(client, args.study, clf, guard, args.series, store,
                           args.window or cfg["preprocess"]["dicom_window"],
                           replace=args.replace)
    except PacsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**run.case.as_dict(), "stored": sorted(run.stored),
                          "version": run.version, "replaced": len(run.replaced)}))
    else:
        print(format_case(run.case))
        for kind in sorted(run.stored):
            print(f"stored the {kind.upper()} in the study as a new series (run {run.version})")
        if run.replaced:
            print(f"deleted {len(run.replaced)} earlier lungct result series")
    return 0


def add_command(sub, common) -> None:
    from lungct.pipeline.options import add_model_options
    from lungct.pacs.workflow import STORE_KINDS

    p = sub.add_parser("pacs", parents=[common], help="search a PACS (DICOMweb), classify a "
                                                      "series, store the result back")
    shared = argparse.ArgumentParser(add_help=False, parents=[common])
    shared.add_argument("--url", help="DICOMweb root (default: LUNGCT_PACS_URL, else pacs.url)")
    shared.add_argument("--json", action="store_true", help="JSON output")
    verbs = p.add_subparsers(dest="pacs_command", required=True)
    q = verbs.add_parser("studies", parents=[shared],
                         help="search studies (UID, date, description, modalities, counts)")
    q.add_argument("--accession", help="filter by AccessionNumber")
    q.add_argument("--patient-id", help="filter by PatientID (never printed)")
    q = verbs.add_parser("series", parents=[shared], help="the series of a study")
    q.add_argument("study", help="StudyInstanceUID")
    q = verbs.add_parser("run", parents=[shared], help="classify a CT series and store the result in its study")
    q.add_argument("study", help="StudyInstanceUID")
    q.add_argument("--series", help="SeriesInstanceUID (default: the study's default CT series)")
    add_model_options(q)
    q.add_argument("--store", nargs="+", choices=STORE_KINDS, default=list(STORE_KINDS),
                   help="what to store back (default: both)")
    q.add_argument("--no-store", action="store_true", help="classify only, store nothing")
    q.add_argument("--replace", action="store_true",
                   help="delete lungct's earlier result series of this study once the new one "
                        "is stored (Orthanc only; default: keep them, the new one is the next run)")
    q = verbs.add_parser("serve", parents=[common],
                         help="start a local Orthanc with DICOMweb on 127.0.0.1 and a demo "
                              "study (Debian packages orthanc, orthanc-dicomweb); Ctrl-C stops it")
    q.add_argument("--port", type=int, help="HTTP port (default: pacs.local_port)")
    q.add_argument("--folder", default=".pacs", help="run folder (git-ignored)")
    q.add_argument("--no-demo", action="store_true", help="do not load the demo study")
    p.set_defaults(func=cmd_pacs)
