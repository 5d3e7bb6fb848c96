"""``python -m lungct lab COMMAND``: the research commands, apart from the users' ones."""

from __future__ import annotations

LAB_COMMANDS = (
    ("findings", "lungct.lab.findings:add_command"),
)


def add_command(sub, common) -> None:
    import importlib

    p = sub.add_parser("lab", help="research: fit and measure what the product ships")
    lab = p.add_subparsers(dest="lab_command", required=True)
    for _, target in LAB_COMMANDS:
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(lab, common)
